//! Unit tests of the partition worker that need its private state: a checkpoint that cannot
//! be committed when the worker ends.

use annals_engine::{Durability, EngineConfig};

use super::*;
use crate::handler::HandlerError;
use crate::runtime::runner::{NO_CEILING, source_filter};
use crate::spec::{ErrorPolicy, Source};
use crate::sqlite::SqliteTarget;

/// Applies nothing: the test below needs only the checkpoint to move.
struct Nothing;

impl Handler for Nothing {
    fn handle(
        &mut self,
        _event: &EventRecord,
        _ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A worker whose in-memory checkpoint is ahead of the committed one when it is stopped
/// while its database is locked by another connection: the final commit fails, and the
/// failure must reach the generation's last error instead of vanishing.
#[test]
fn a_checkpoint_that_cannot_commit_when_the_worker_ends_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let engine = Engine::open_dir(&dir.path().join("store"), config)
        .unwrap()
        .0;
    let db = dir.path().join("views.db");
    let spec = Arc::new(ProjectionSpec {
        name: "flush".to_owned(),
        source: Source::All,
        tables: Vec::new(),
        objects: Vec::new(),
        setup: Vec::new(),
        statements: Vec::new(),
        policy: ErrorPolicy::default(),
        partitions: 1,
        snapshot_every: None,
        handler: Arc::new(|| Box::new(Nothing) as Box<dyn Handler>),
    });
    let mut target = SqliteTarget::open(&db).unwrap();
    target
        .create_generation("flush", 1, &[], true, &[])
        .unwrap();
    let shared = Arc::new(RunnerShared::new(
        1,
        1,
        &[Position(0)],
        Position(0),
        NO_CEILING,
    ));
    let projection = Arc::new(ProjectionShared::new(
        "flush".to_owned(),
        source_filter(&Source::All).unwrap(),
        Arc::clone(&shared),
        Vec::new(),
    ));
    let setup = WorkerSetup::prepare(Box::new(target), &spec, 1, 0, Position(0), &shared).unwrap();
    let mut worker = Worker::new(setup, spec, Arc::clone(&shared), projection, engine, None);
    // As a page without events of this partition does within the idle commit interval.
    worker.advance(Position(7));
    assert_eq!(shared.position(), Position(7));

    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    shared.stop.store(true, Ordering::Release);
    let (pages, rx) = crossbeam_channel::bounded(1);
    drop(pages);
    worker.run(rx);
    blocker.execute_batch("ROLLBACK").unwrap();

    let recorded = shared.retrying.lock().clone().unwrap_or_default();
    assert!(
        recorded.contains("checkpoint 7 not committed before the worker ended")
            && recorded.contains("target unavailable"),
        "last error: {recorded:?}"
    );
    assert!(shared.fault.lock().is_none());
    let stored = SqliteTarget::open(&db).unwrap().load("flush").unwrap();
    assert_eq!(stored.generations.len(), 1);
    assert!(stored.generations[0].checkpoints.is_empty());
}
