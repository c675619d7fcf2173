//! Where the catalog keeps each generation's definition text: files in the data directory (one
//! node) or one stream of the store's log (several nodes, see `log`). Both hold the same thing,
//! projection → generation → text, and the catalog changes it one projection at a time with
//! [`Storage::set`], which writes durably before it answers and changes nothing when it fails.
//!
//! Files: `<data>/projections/{name}.g{generation}.toml`, each written to a temporary file,
//! synced, renamed and the directory synced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use annals_engine::Engine;
use parking_lot::Mutex;

use super::log::Log;
use super::{CATALOG_DIR, CatalogError};

/// One projection's stored texts, by generation.
pub(super) type Generations = BTreeMap<u32, String>;
/// Every stored definition: projection → generation → canonical text.
pub(super) type Stored = BTreeMap<String, Generations>;

/// The catalog's durable copy of its definitions, and what was last written there.
#[derive(Debug)]
pub(super) struct Storage {
    backend: Backend,
    /// As stored: what every change starts from (the log's events hold the whole set).
    stored: Mutex<Stored>,
}

#[derive(Debug)]
enum Backend {
    Files(Files),
    Log(Log),
}

impl Storage {
    /// The definitions kept in files under `data_dir`.
    pub(super) fn files(data_dir: &Path) -> Result<Self, CatalogError> {
        let files = Files {
            dir: data_dir.join(CATALOG_DIR),
        };
        let stored = files.load()?;
        Ok(Self {
            backend: Backend::Files(files),
            stored: Mutex::new(stored),
        })
    }

    /// The definitions kept in `engine`'s log.
    pub(super) fn log(engine: Engine) -> Result<Self, CatalogError> {
        let (log, stored) = Log::open(engine)?;
        Ok(Self {
            backend: Backend::Log(log),
            stored: Mutex::new(stored),
        })
    }

    /// Everything stored.
    pub(super) fn all(&self) -> Stored {
        self.stored.lock().clone()
    }

    /// What is stored for `name`.
    pub(super) fn get(&self, name: &str) -> Option<Generations> {
        self.stored.lock().get(name).cloned()
    }

    /// Stores `generations` as all of `name`'s texts (`None` or empty: forgets `name`). Durable
    /// when it answers Ok; on an error nothing changed in the log, and the files not yet
    /// written are as they were.
    pub(super) fn set(
        &self,
        name: &str,
        generations: Option<Generations>,
    ) -> Result<(), CatalogError> {
        let after = generations.filter(|g| !g.is_empty());
        let mut stored = self.stored.lock();
        if stored.get(name) == after.as_ref() {
            return Ok(());
        }
        let mut next = stored.clone();
        let before = match &after {
            Some(g) => next.insert(name.to_owned(), g.clone()),
            None => next.remove(name),
        };
        match &self.backend {
            Backend::Files(files) => {
                files.write(
                    name,
                    &before.unwrap_or_default(),
                    &after.unwrap_or_default(),
                )?;
            }
            Backend::Log(log) => log.write(&next)?,
        }
        *stored = next;
        Ok(())
    }

    /// [`Storage::set`] for a clean-up that may fail: the failure is logged, and what is stored
    /// stays a step behind (the next open cleans up again).
    pub(super) fn set_or_warn(&self, name: &str, generations: Option<Generations>) {
        if let Err(e) = self.set(name, generations) {
            tracing::warn!(projection = %name, error = %e,
                "stored projection definitions not cleaned up");
        }
    }
}

/// Definitions as files in one directory.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
}

impl Files {
    /// Every `{name}.g{generation}.toml` in the directory (created if missing).
    fn load(&self) -> Result<Stored, CatalogError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut stored = Stored::new();
        for item in std::fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let path = item.map_err(|e| io_error(&self.dir, e))?.path();
            let Some((name, generation)) = parse_file_name(&path) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            stored.entry(name).or_default().insert(generation, text);
        }
        Ok(stored)
    }

    /// Writes the texts of `after` that `before` does not hold, then removes the files of the
    /// generations `after` no longer has (a removal that fails leaves a file the next open
    /// cleans up).
    fn write(
        &self,
        name: &str,
        before: &Generations,
        after: &Generations,
    ) -> Result<(), CatalogError> {
        for (generation, text) in after {
            if before.get(generation) != Some(text) {
                self.persist(name, *generation, text)?;
            }
        }
        for generation in before.keys().filter(|g| !after.contains_key(g)) {
            let _ = std::fs::remove_file(self.file(name, *generation));
        }
        Ok(())
    }

    fn file(&self, name: &str, generation: u32) -> PathBuf {
        self.dir.join(format!("{name}.g{generation}.toml"))
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
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_error(&path, e))
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
