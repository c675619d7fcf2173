//! The store a protocol test runs on: the embedded store in a temporary directory, or, when
//! `ANNALS_TEST_STORE` names a PostgreSQL server (`postgres://USER@HOST:PORT/DB`, where the
//! tests may create databases), the same directory as the replica of a store in a database of
//! its own there. One suite, two backends: `scripts/test.sh` runs the gRPC and HTTP suites a
//! second time that way, on a throwaway server it starts.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use annals_engine::{Engine, EngineConfig};

/// The environment variable naming the PostgreSQL server to run the store on.
pub const TEST_STORE_ENV: &str = "ANNALS_TEST_STORE";

/// Opens the store the test runs on in `dir` (see the module's documentation). Must run inside
/// a tokio runtime, which then carries the replica's tasks; panics with the reason when the
/// named server cannot be used (a test never falls back to the other store).
pub async fn open_test_store(dir: &Path) -> Engine {
    let (engine, _) = match Engine::open_dir(dir, EngineConfig::default()) {
        Ok(opened) => opened,
        Err(e) => panic!("cannot open the test store in {}: {e}", dir.display()),
    };
    let Ok(url) = std::env::var(TEST_STORE_ENV) else {
        return engine;
    };
    let config = fresh_database(&url).await;
    let store = match annals_pgstore::PgStore::open_config(config).await {
        Ok(store) => store,
        Err(e) => panic!("{TEST_STORE_ENV}: cannot open the store: {e}"),
    };
    annals_replica::replicate(&store, &engine);
    engine
}

/// Creates a database of its own on the server `url` names; its connection settings.
async fn fresh_database(url: &str) -> tokio_postgres::Config {
    static DATABASES: AtomicU64 = AtomicU64::new(0);
    let mut config = match tokio_postgres::Config::from_str(url) {
        Ok(c) => c,
        Err(e) => panic!("{TEST_STORE_ENV} is not a Postgres URL: {e}"),
    };
    let name = format!(
        "annals_test_{}_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    );
    let (client, connection) = match config.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!("{TEST_STORE_ENV}: cannot connect: {e}"),
    };
    tokio::spawn(connection);
    if let Err(e) = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        panic!("{TEST_STORE_ENV}: cannot create a database: {e}");
    }
    config.dbname(&name);
    config
}
