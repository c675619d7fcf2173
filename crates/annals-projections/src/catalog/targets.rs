//! Where a registered definition's tables go: the target a definition names, or the catalog's
//! default, opened as the catalog's mode allows.
//!
//! Embedded (one node, [`Catalog::open`](super::Catalog::open)): the default is a SQLite file
//! in the data directory and `sqlite:` paths are relative to it. Shared (multi-node,
//! [`Catalog::open_shared`](super::Catalog::open_shared)): a projection must be able to move to
//! whichever node holds the lease, so only PostgreSQL targets are allowed, the default is a
//! PostgreSQL URL, and every target writes under the lease's [`Fence`].

use std::path::PathBuf;

use super::{CatalogError, DEFAULT_SQLITE_FILE};
use crate::definition::{Definition, DefinitionError, DefinitionTarget};
use crate::postgres::{Fence, PostgresTarget};
use crate::sqlite::SqliteTarget;
use crate::target::{Target, TargetError};

/// How a catalog opens targets.
pub(super) enum Targets {
    /// One node: SQLite files live in `data_dir`.
    Embedded { data_dir: PathBuf },
    /// Several nodes on one store: PostgreSQL only, fenced by the lease.
    Shared {
        default_url: String,
        fence: Option<Fence>,
    },
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URLs may hold a password: never printed.
            Targets::Embedded { data_dir } => f
                .debug_struct("Embedded")
                .field("data_dir", data_dir)
                .finish(),
            Targets::Shared { fence, .. } => f
                .debug_struct("Shared")
                .field("fence", fence)
                .finish_non_exhaustive(),
        }
    }
}

impl Targets {
    /// Refuses a definition this mode cannot run: in shared mode, one whose tables would be in a
    /// SQLite file, which stays on the node that wrote it.
    pub(super) fn check(&self, definition: &Definition) -> Result<(), CatalogError> {
        match (self, &definition.target) {
            (Targets::Shared { .. }, Some(DefinitionTarget::Sqlite(_))) => {
                Err(sqlite_refused(&definition.spec.name))
            }
            _ => Ok(()),
        }
    }

    /// Opens (and installs) the target of projection `name`: `target`, or the default.
    pub(super) fn open(
        &self,
        name: &str,
        target: Option<&DefinitionTarget>,
    ) -> Result<Box<dyn Target>, CatalogError> {
        let opened: Result<Box<dyn Target>, TargetError> = match (self, target) {
            (Targets::Embedded { data_dir }, None) => {
                SqliteTarget::open(data_dir.join(DEFAULT_SQLITE_FILE))
                    .map(|t| Box::new(t) as Box<dyn Target>)
            }
            (Targets::Embedded { data_dir }, Some(DefinitionTarget::Sqlite(path))) => {
                SqliteTarget::open(data_dir.join(path)).map(|t| Box::new(t) as Box<dyn Target>)
            }
            (Targets::Embedded { .. }, Some(DefinitionTarget::Postgres(url))) => {
                PostgresTarget::connect(url).map(|t| Box::new(t) as Box<dyn Target>)
            }
            (Targets::Shared { default_url, fence }, None) => {
                connect_shared(default_url, fence.as_ref())
            }
            (Targets::Shared { fence, .. }, Some(DefinitionTarget::Postgres(url))) => {
                connect_shared(url, fence.as_ref())
            }
            (Targets::Shared { .. }, Some(DefinitionTarget::Sqlite(_))) => {
                return Err(sqlite_refused(name));
            }
        };
        opened.map_err(|source| CatalogError::Target {
            name: name.to_owned(),
            source,
        })
    }
}

/// Why projection `name`'s SQLite target is refused in shared mode.
fn sqlite_refused(name: &str) -> CatalogError {
    CatalogError::Definition(DefinitionError::Invalid {
        projection: name.to_owned(),
        field: "target".to_owned(),
        message: "a SQLite file cannot move between nodes, and in multi-node mode a projection \
                  runs on whichever node holds the lease: use a postgres:// target, or omit the \
                  target to use the store's database"
            .to_owned(),
    })
}

fn connect_shared(url: &str, fence: Option<&Fence>) -> Result<Box<dyn Target>, TargetError> {
    let target = match fence {
        Some(fence) => PostgresTarget::connect_fenced(url, fence.clone())?,
        None => PostgresTarget::connect(url)?,
    };
    Ok(Box::new(target))
}
