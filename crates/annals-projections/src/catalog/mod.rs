//! The server's catalog of declarative projections: which definitions are registered, where
//! their targets are, and the definition text of every generation, kept so that a restart
//! registers the same projections again, a rebuild in progress included.
//!
//! Each stored text holds one `[[projection]]` in a canonical form (re-serialized TOML, so
//! formatting and comments do not count as changes). A generation's text is stored before the
//! generation is created (a new projection's too) and forgotten once the generation is gone;
//! a change whose store fails therefore changes nothing, and texts stored ahead of a generation
//! that never came are forgotten by the next open, which trusts the target for which generation
//! serves and which is being built.
//!
//! Two modes:
//! - embedded ([`Catalog::open`], one node): the texts are files,
//!   `<data>/projections/{name}.g{generation}.toml`; the default target is the SQLite file
//!   `<data>/projections.sqlite3`, and a `sqlite:` path in a definition is relative to the data
//!   directory;
//! - shared ([`Catalog::open_shared`], several nodes on one store, the lease's holder running
//!   the projections): the texts are in one stream of the store's log
//!   ([`SHARED_CATALOG_STREAM`]), written with the expected revision of the last one read, so a
//!   node whose view is stale fails ([`CatalogError::Conflict`]) instead of undoing another's
//!   change; every target is PostgreSQL (a SQLite file cannot follow the lease to another
//!   node: refused), definitions without a target go to [`SharedCatalog::default_target`], and
//!   every target writes under the lease's [`Fence`].
//!
//! ## Files
//! - this one: [`Catalog`], its errors, applying definitions, reopening stored ones;
//! - `storage`: the stored texts and the files backend;
//! - `log`: the shared backend, one stream of the log;
//! - `targets`: which target a definition gets in each mode.

mod log;
mod storage;
mod targets;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use annals_engine::{Engine, EngineError};
use parking_lot::Mutex;

use crate::definition::{Definition, DefinitionError, parse_definitions};
use crate::postgres::Fence;
use crate::runtime::{ProjectionError, Projections};
use crate::target::{StoredProjection, TargetError};
use storage::{Generations, Storage};
use targets::Targets;

pub use log::{SHARED_CATALOG_EVENT_TYPE, SHARED_CATALOG_EVENTS_KEPT, SHARED_CATALOG_STREAM};

/// The directory under the data directory that holds definitions.
pub const CATALOG_DIR: &str = "projections";
/// The default target's file under the data directory.
pub const DEFAULT_SQLITE_FILE: &str = "projections.sqlite3";
/// Largest definition text accepted, in bytes.
pub const DEFINITION_TEXT_BYTES_MAX: usize = 1 << 20;

/// A catalog operation failed; nothing of the failing projection changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A definition is wrong, or cannot run in this mode (a SQLite target in shared mode).
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("projection {name:?}: cannot open its target: {source}")]
    Target {
        name: String,
        #[source]
        source: TargetError,
    },
    #[error("projection definitions: {0}")]
    Io(String),
    #[error("definition text is {0} bytes, more than {DEFINITION_TEXT_BYTES_MAX}")]
    TooLarge(usize),
    /// The shared catalog's stream could not be read or written (a fenced write included).
    #[error("projection catalog {SHARED_CATALOG_STREAM}: {source}")]
    Store {
        #[source]
        source: EngineError,
    },
    /// Another node changed the shared catalog since this one read it; nothing was changed.
    #[error(
        "the projection catalog was changed by another node (this node read revision {}, the \
         stream is at {}); nothing was changed: open the catalog again",
        revision_text(*.expected),
        revision_text(*.actual)
    )]
    Conflict {
        expected: Option<u64>,
        actual: Option<u64>,
    },
    /// The shared catalog's newest event does not decode.
    #[error("projection catalog: {0}")]
    Corrupt(String),
    /// Every definition together is more than one event of the log holds.
    #[error("the projection catalog would be {bytes} bytes, more than one event holds ({max})")]
    CatalogTooLarge { bytes: usize, max: usize },
    /// [`SharedCatalog::default_target`] is not a PostgreSQL URL.
    #[error("the default projection target must be a PostgreSQL URL (postgres://…): {0}")]
    DefaultTarget(String),
}

fn revision_text(revision: Option<u64>) -> String {
    revision.map_or_else(|| "none".to_owned(), |r| r.to_string())
}

/// What [`Catalog::open_shared`] needs besides the registry and the store.
#[derive(Clone)]
pub struct SharedCatalog {
    /// Where definitions without a `target` put their tables: a PostgreSQL URL
    /// (`postgres://…`), the store's own database typically.
    pub default_target: String,
    /// The lease every PostgreSQL target of the catalog writes under: a target refuses every
    /// write once a later holder of the lease claimed it ([`crate::TargetError::Fenced`]).
    /// `None` only where no other node can ever run these projections.
    pub fence: Option<Fence>,
}

impl std::fmt::Debug for SharedCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("SharedCatalog")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// What [`Catalog::apply`] did with one projection.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Applied {
    /// New: registered and started.
    Registered { name: String },
    /// Same definition as the one registered: nothing to do.
    Unchanged { name: String },
    /// A changed definition: a new generation builds beside the serving one.
    Rebuilding { name: String, generation: u32 },
}

#[derive(Debug, Default)]
struct Entry {
    /// Canonical text per generation.
    generations: Generations,
}

/// The registered declarative projections of one data directory (embedded) or one store
/// (shared).
#[derive(Debug)]
pub struct Catalog {
    projections: Arc<Projections>,
    storage: Storage,
    targets: Targets,
    /// The registered projections (a stored one that did not start is not here).
    entries: Mutex<HashMap<String, Entry>>,
    /// Held through every change (apply, rebuild), so each one starts where the last ended.
    changing: Mutex<()>,
}

impl Catalog {
    /// Registers every projection stored under `data_dir` with `projections`. A projection that
    /// cannot start (its target is down, say) is reported in the second value and left out; the
    /// others run.
    pub fn open(
        projections: Arc<Projections>,
        data_dir: &Path,
    ) -> Result<(Self, Vec<CatalogError>), CatalogError> {
        let storage = Storage::files(data_dir)?;
        let targets = Targets::Embedded {
            data_dir: data_dir.to_owned(),
        };
        Ok(Self::start(projections, storage, targets))
    }

    /// The catalog of multi-node mode: definitions kept in `engine`'s log (stream
    /// [`SHARED_CATALOG_STREAM`]) instead of files, targets in PostgreSQL only (the default one
    /// [`SharedCatalog::default_target`]), each writing under [`SharedCatalog::fence`].
    /// Registers every stored projection with `projections`; one that cannot start (its target
    /// is down, or fenced) is reported in the second value and left out; the others run.
    ///
    /// Meant for the node that holds the lease: it reads the catalog once, here, and each
    /// change expects the stream to be as it last read or wrote it. Where the store fences
    /// writes too, pass the engine handle fenced by the same lease, so a node that lost the
    /// lease cannot change the catalog either.
    pub fn open_shared(
        projections: Arc<Projections>,
        engine: Engine,
        options: SharedCatalog,
    ) -> Result<(Self, Vec<CatalogError>), CatalogError> {
        let SharedCatalog {
            default_target,
            fence,
        } = options;
        if !(default_target.starts_with("postgres://")
            || default_target.starts_with("postgresql://"))
        {
            return Err(CatalogError::DefaultTarget(
                "it does not start with postgres:// or postgresql://".to_owned(),
            ));
        }
        if let Err(e) = default_target.parse::<postgres::Config>() {
            return Err(CatalogError::DefaultTarget(e.to_string()));
        }
        let storage = Storage::log(engine)?;
        let targets = Targets::Shared {
            default_url: default_target,
            fence,
        };
        Ok(Self::start(projections, storage, targets))
    }

    fn start(
        projections: Arc<Projections>,
        storage: Storage,
        targets: Targets,
    ) -> (Self, Vec<CatalogError>) {
        let catalog = Self {
            projections,
            storage,
            targets,
            entries: Mutex::new(HashMap::new()),
            changing: Mutex::new(()),
        };
        let mut failed = Vec::new();
        for (name, generations) in catalog.storage.all() {
            if let Err(e) = catalog.reopen(&name, generations) {
                tracing::error!(projection = %name, error = %e, "projection not started");
                failed.push(e);
            }
        }
        (catalog, failed)
    }

    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }

    /// Registers the stored generations of `name`: the serving one, and the one being built if
    /// a rebuild was under way.
    fn reopen(&self, name: &str, generations: Generations) -> Result<(), CatalogError> {
        let definition = |text: &str| -> Result<Definition, CatalogError> {
            let mut defs = parse_definitions(text)?;
            match defs.pop() {
                Some(d) if defs.is_empty() && d.spec.name == name => Ok(d),
                _ => Err(CatalogError::Io(format!(
                    "stored definition of {name:?} does not hold exactly that projection"
                ))),
            }
        };
        let (_, newest) = generations
            .last_key_value()
            .ok_or_else(|| CatalogError::Io(format!("no stored definition of {name:?}")))?;
        let newest = definition(newest)?;
        let mut target = self.targets.open(name, newest.target.as_ref())?;
        let target_err = |source| CatalogError::Target {
            name: name.to_owned(),
            source,
        };
        // The target knows which generation serves and which is being built; the stored texts
        // may be a step ahead of it (stored before a generation is created).
        target.install().map_err(target_err)?;
        let stored = target.load(name).map_err(target_err)?;
        let serving = stored
            .generations
            .iter()
            .find(|g| g.serving)
            .map(|g| g.generation);
        let building = stored
            .generations
            .iter()
            .find(|g| !g.serving)
            .map(|g| g.generation);
        let serving_entry = serving.and_then(|s| {
            generations
                .range(..=s)
                .next_back()
                .map(|(g, t)| (*g, t.clone()))
        });
        let oldest_kept = serving_entry.as_ref().map_or(0, |(g, _)| *g);
        let (serving_spec, building_spec) = match serving_entry {
            Some((_, text)) => {
                let building = match building.and_then(|b| generations.get(&b)) {
                    Some(text) => Some(definition(text)?.spec),
                    None => None,
                };
                (definition(&text)?.spec, building)
            }
            // Never created (stopped between storing the text and registering): start anew.
            None => (newest.spec, None),
        };
        self.projections
            .register_resuming(serving_spec, building_spec, target)?;
        let newest_kept = building.or(serving).unwrap_or(u32::MAX);
        // Older than the serving text: swapped away. Newer than anything the target holds:
        // stored for a rebuild that never started.
        let kept: Generations = generations
            .iter()
            .filter(|(g, _)| **g >= oldest_kept && **g <= newest_kept)
            .map(|(g, t)| (*g, t.clone()))
            .collect();
        if kept != generations {
            self.storage.set_or_warn(name, Some(kept.clone()));
        }
        self.entries
            .lock()
            .insert(name.to_owned(), Entry { generations: kept });
        Ok(())
    }

    /// Applies a definition file: registers new projections, leaves unchanged ones alone, and
    /// rebuilds changed ones beside their serving version. The whole text is parsed and
    /// validated first (in shared mode, a SQLite target is refused here), so a bad file changes
    /// nothing.
    pub fn apply(&self, text: &str) -> Result<Vec<Applied>, CatalogError> {
        if text.len() > DEFINITION_TEXT_BYTES_MAX {
            return Err(CatalogError::TooLarge(text.len()));
        }
        let definitions = parse_definitions(text)?;
        for definition in &definitions {
            self.targets.check(definition)?;
        }
        let canonical = canonical_texts(text)?;
        let _changing = self.changing.lock();
        let mut applied = Vec::with_capacity(definitions.len());
        for definition in definitions {
            let name = definition.spec.name.clone();
            let text = canonical
                .get(&name)
                .cloned()
                .ok_or_else(|| CatalogError::Io(format!("definition of {name:?} not found")))?;
            applied.push(self.apply_one(definition, text)?);
        }
        Ok(applied)
    }

    fn apply_one(&self, definition: Definition, text: String) -> Result<Applied, CatalogError> {
        let name = definition.spec.name.clone();
        let newest = self
            .entries
            .lock()
            .get(&name)
            .and_then(|e| e.generations.last_key_value().map(|(g, t)| (*g, t.clone())));
        match newest {
            Some((_, current)) if current == text => Ok(Applied::Unchanged { name }),
            Some((generation, current)) => {
                let stored_target = parse_definitions(&current)?.pop().and_then(|d| d.target);
                if stored_target != definition.target {
                    return Err(CatalogError::Io(format!(
                        "projection {name:?}: a new definition cannot move it to another target; \
                         register it under a new name"
                    )));
                }
                self.start_rebuild(&name, generation, definition, text)
            }
            None => self.register_new(definition, text),
        }
    }

    /// Registers a projection the catalog does not run. Its text is stored first, as all of the
    /// projection's texts (a stored one that did not start is replaced), under the generation
    /// the target will serve; if registering fails, what was stored before is put back.
    fn register_new(&self, definition: Definition, text: String) -> Result<Applied, CatalogError> {
        let name = definition.spec.name.clone();
        let mut target = self.targets.open(&name, definition.target.as_ref())?;
        let stored = target.load(&name).map_err(|source| CatalogError::Target {
            name: name.clone(),
            source,
        })?;
        let generation = serving_generation(&stored);
        let before = self.storage.get(&name);
        self.storage
            .set(&name, Some(Generations::from([(generation, text.clone())])))?;
        if let Err(e) = self.projections.register(definition.spec, target) {
            self.storage.set_or_warn(&name, before);
            return Err(e.into());
        }
        let serving = self
            .projections
            .status(&name)
            .map_or(generation, |s| s.generation);
        if serving != generation {
            self.storage
                .set(&name, Some(Generations::from([(serving, text.clone())])))?;
        }
        self.entries.lock().insert(
            name.clone(),
            Entry {
                generations: Generations::from([(serving, text)]),
            },
        );
        Ok(Applied::Registered { name })
    }

    /// Rebuilds `name` from its newest stored definition.
    pub fn rebuild(&self, name: &str) -> Result<Applied, CatalogError> {
        let _changing = self.changing.lock();
        let newest = self
            .entries
            .lock()
            .get(name)
            .and_then(|e| e.generations.last_key_value().map(|(g, t)| (*g, t.clone())));
        let not_found = || ProjectionError::NotFound {
            name: name.to_owned(),
        };
        let (generation, text) = newest.ok_or_else(not_found)?;
        let definition = parse_definitions(&text)?.pop().ok_or_else(not_found)?;
        self.start_rebuild(name, generation, definition, text)
    }

    /// Starts building a new generation from `definition`; its text is stored first, under the
    /// generation number the runtime gives it, and forgotten again if the rebuild does not
    /// start.
    fn start_rebuild(
        &self,
        name: &str,
        newest: u32,
        definition: Definition,
        text: String,
    ) -> Result<Applied, CatalogError> {
        let next = newest + 1;
        let before = self.storage.get(name);
        let mut ahead = before.clone().unwrap_or_default();
        ahead.insert(next, text.clone());
        self.storage.set(name, Some(ahead.clone()))?;
        if let Err(e) = self.projections.rebuild(name, definition.spec) {
            self.storage.set_or_warn(name, before);
            return Err(e.into());
        }
        let generation = self
            .projections
            .status(name)
            .ok()
            .and_then(|s| s.rebuild.map(|r| r.generation))
            .unwrap_or(next);
        if generation != next {
            ahead.remove(&next);
            ahead.insert(generation, text.clone());
            self.storage.set(name, Some(ahead))?;
        }
        self.entries
            .lock()
            .entry(name.to_owned())
            .or_default()
            .generations
            .insert(generation, text);
        Ok(Applied::Rebuilding {
            name: name.to_owned(),
            generation,
        })
    }

    /// The registered names with their newest definition text.
    pub fn definitions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .entries
            .lock()
            .iter()
            .filter_map(|(n, e)| {
                e.generations
                    .last_key_value()
                    .map(|(_, t)| (n.clone(), t.clone()))
            })
            .collect();
        out.sort();
        out
    }
}

/// The generation a projection registered on a target that holds `stored` serves: the newest
/// serving one (as the runtime picks it), or the first of a new projection.
fn serving_generation(stored: &StoredProjection) -> u32 {
    stored
        .generations
        .iter()
        .filter(|g| g.serving)
        .map(|g| g.generation)
        .max()
        .or_else(|| stored.generations.first().map(|g| g.generation))
        .unwrap_or(1)
}

/// Each projection's table re-serialized on its own, keyed by name.
fn canonical_texts(text: &str) -> Result<HashMap<String, String>, CatalogError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| DefinitionError::Syntax(e.to_string()))?;
    let mut out = HashMap::new();
    if let Some(toml::Value::Array(items)) = table.get("projection") {
        for item in items {
            let Some(name) = item.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            let mut one = toml::Table::new();
            one.insert(
                "projection".to_owned(),
                toml::Value::Array(vec![item.clone()]),
            );
            let text = toml::to_string(&one)
                .map_err(|e| CatalogError::Io(format!("definition of {name:?}: {e}")))?;
            out.insert(name.to_owned(), text);
        }
    }
    Ok(out)
}
