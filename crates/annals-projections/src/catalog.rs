//! The server's catalog of declarative projections: which definitions are registered, where
//! their targets are, and the definition text of every generation kept in the data directory so
//! a restart registers the same projections again, a rebuild in progress included.
//!
//! Files: `<data>/projections/{name}.g{generation}.toml`, each holding one `[[projection]]` in a
//! canonical form (re-serialized TOML, so formatting and comments do not count as changes). A
//! generation's file is written before the generation is created and removed once the
//! generation is gone. The default target is the SQLite file `<data>/projections.sqlite3`;
//! a `sqlite:` path in a definition is relative to the data directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::definition::{Definition, DefinitionError, DefinitionTarget, parse_definitions};
use crate::postgres::PostgresTarget;
use crate::runtime::{ProjectionError, Projections};
use crate::sqlite::SqliteTarget;
use crate::target::{Target, TargetError};

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
    generations: BTreeMap<u32, String>,
}

/// The registered declarative projections of one data directory.
#[derive(Debug)]
pub struct Catalog {
    projections: Arc<Projections>,
    data_dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Catalog {
    /// Registers every projection stored under `data_dir` with `projections`. A projection that
    /// cannot start (its target is down, say) is reported in the second value and left out; the
    /// others run.
    pub fn open(
        projections: Arc<Projections>,
        data_dir: &Path,
    ) -> Result<(Self, Vec<CatalogError>), CatalogError> {
        let dir = data_dir.join(CATALOG_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let catalog = Self {
            projections,
            data_dir: data_dir.to_owned(),
            entries: Mutex::new(HashMap::new()),
        };
        let mut stored: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
        for item in std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
            let path = item.map_err(|e| io_error(&dir, e))?.path();
            let Some((name, generation)) = parse_file_name(&path) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            stored.entry(name).or_default().insert(generation, text);
        }
        let mut failed = Vec::new();
        for (name, generations) in stored {
            if let Err(e) = catalog.reopen(&name, generations) {
                tracing::error!(projection = %name, error = %e, "projection not started");
                failed.push(e);
            }
        }
        Ok((catalog, failed))
    }

    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }

    /// Registers the stored generations of `name`: the serving one, and the one being built if
    /// a rebuild was under way.
    fn reopen(&self, name: &str, generations: BTreeMap<u32, String>) -> Result<(), CatalogError> {
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
        let mut target = self.open_target(name, newest.target.as_ref())?;
        let target_err = |source| CatalogError::Target {
            name: name.to_owned(),
            source,
        };
        // The target knows which generation serves and which is being built; the files may be
        // a step ahead of it (written before a generation is created).
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
            // Never created (stopped between writing the file and registering): start anew.
            None => (newest.spec, None),
        };
        self.projections
            .register_resuming(serving_spec, building_spec, target)?;
        let mut kept = BTreeMap::new();
        let newest_kept = building.or(serving).unwrap_or(u32::MAX);
        for (g, text) in generations {
            // Older than the serving text: swapped away. Newer than anything the target holds:
            // written by a rebuild that never started.
            if g >= oldest_kept && g <= newest_kept {
                kept.insert(g, text);
            } else {
                self.forget_file(name, g);
            }
        }
        self.entries
            .lock()
            .insert(name.to_owned(), Entry { generations: kept });
        Ok(())
    }

    /// Applies a definition file: registers new projections, leaves unchanged ones alone, and
    /// rebuilds changed ones beside their serving version. The whole text is parsed and
    /// validated first, so a bad file changes nothing.
    pub fn apply(&self, text: &str) -> Result<Vec<Applied>, CatalogError> {
        if text.len() > DEFINITION_TEXT_BYTES_MAX {
            return Err(CatalogError::TooLarge(text.len()));
        }
        let definitions = parse_definitions(text)?;
        let canonical = canonical_texts(text)?;
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
            None => {
                let target = self.open_target(&name, definition.target.as_ref())?;
                self.projections.register(definition.spec, target)?;
                let generation = self
                    .projections
                    .status(&name)
                    .map(|s| s.generation)
                    .unwrap_or(1);
                self.persist(&name, generation, &text)?;
                self.entries
                    .lock()
                    .entry(name.clone())
                    .or_default()
                    .generations
                    .insert(generation, text);
                Ok(Applied::Registered { name })
            }
        }
    }

    /// Rebuilds `name` from its newest stored definition.
    pub fn rebuild(&self, name: &str) -> Result<Applied, CatalogError> {
        let text = self
            .entries
            .lock()
            .get(name)
            .and_then(|e| e.generations.last_key_value().map(|(_, t)| t.clone()))
            .ok_or_else(|| ProjectionError::NotFound {
                name: name.to_owned(),
            })?;
        let mut defs = parse_definitions(&text)?;
        let definition = defs.pop().ok_or_else(|| ProjectionError::NotFound {
            name: name.to_owned(),
        })?;
        let generation = self
            .entries
            .lock()
            .get(name)
            .and_then(|e| e.generations.last_key_value().map(|(g, _)| *g))
            .unwrap_or(0);
        self.start_rebuild(name, generation, definition, text)
    }

    /// Starts building a new generation from `definition`; its text is stored first, under the
    /// generation number the runtime gives it.
    fn start_rebuild(
        &self,
        name: &str,
        newest: u32,
        definition: Definition,
        text: String,
    ) -> Result<Applied, CatalogError> {
        let next = newest + 1;
        self.persist(name, next, &text)?;
        if let Err(e) = self.projections.rebuild(name, definition.spec) {
            self.forget_file(name, next);
            return Err(e.into());
        }
        let generation = self
            .projections
            .status(name)
            .ok()
            .and_then(|s| s.rebuild.map(|r| r.generation))
            .unwrap_or(next);
        if generation != next {
            self.persist(name, generation, &text)?;
            self.forget_file(name, next);
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

    fn open_target(
        &self,
        name: &str,
        target: Option<&DefinitionTarget>,
    ) -> Result<Box<dyn Target>, CatalogError> {
        let opened: Result<Box<dyn Target>, TargetError> = match target {
            None => SqliteTarget::open(self.data_dir.join(DEFAULT_SQLITE_FILE))
                .map(|t| Box::new(t) as Box<dyn Target>),
            Some(DefinitionTarget::Sqlite(path)) => {
                SqliteTarget::open(self.data_dir.join(path)).map(|t| Box::new(t) as Box<dyn Target>)
            }
            Some(DefinitionTarget::Postgres(url)) => {
                PostgresTarget::connect(url).map(|t| Box::new(t) as Box<dyn Target>)
            }
        };
        opened.map_err(|source| CatalogError::Target {
            name: name.to_owned(),
            source,
        })
    }

    fn file(&self, name: &str, generation: u32) -> PathBuf {
        self.data_dir
            .join(CATALOG_DIR)
            .join(format!("{name}.g{generation}.toml"))
    }

    /// Writes a generation's definition durably (temporary file, sync, rename, sync directory).
    fn persist(&self, name: &str, generation: u32, text: &str) -> Result<(), CatalogError> {
        use std::io::Write;
        let path = self.file(name, generation);
        let tmp = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(self.data_dir.join(CATALOG_DIR))?.sync_all()
        };
        write().map_err(|e| io_error(&path, e))
    }

    fn forget_file(&self, name: &str, generation: u32) {
        let _ = std::fs::remove_file(self.file(name, generation));
    }
}

fn io_error(path: &Path, e: std::io::Error) -> CatalogError {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
    CatalogError::Io(format!("{}: {e}", file.unwrap_or_default()))
}

/// `{name}.g{generation}.toml` → (name, generation).
fn parse_file_name(path: &Path) -> Option<(String, u32)> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".toml")?;
    let (name, generation) = stem.rsplit_once(".g")?;
    Some((name.to_owned(), generation.parse().ok()?))
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
