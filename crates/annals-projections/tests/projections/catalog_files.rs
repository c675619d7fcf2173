//! The embedded catalog (one node): each generation's text is a file in the data directory,
//! stored before the generation is created and forgotten when it is gone or never came; a
//! projection that does not register leaves no file; a restart registers the same projections.

use std::path::Path;
use std::sync::Arc;

use annals_projections::{Applied, CATALOG_DIR, Catalog, CatalogError, Projections, SqliteTarget};

use crate::support::{Store, WAIT, eventually};

fn counts(amount: &str) -> String {
    format!(
        r#"
[[projection]]
name = "counts"
source = {{ category = "acct" }}
tables = ["counts"]
setup = ["CREATE TABLE {{counts}} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL)"]

[[projection.handler]]
event_type = "Deposited"
sql = "INSERT INTO {{counts}} (stream, total) VALUES ($1, {amount}) ON CONFLICT (stream) DO UPDATE SET total = total + excluded.total"
params = ["stream", "data.amount"]
"#
    )
}

const BAD_SQL: &str = r#"
[[projection]]
name = "broken"
source = { category = "acct" }
tables = ["broken"]
setup = ["CREATE TABLE {broken} (stream TEXT PRIMARY KEY)"]

[[projection.handler]]
event_type = "Deposited"
sql = "INSERT INTO {broken} (no_such_column) VALUES ($1)"
params = ["stream"]
"#;

/// The definition files, by name.
fn files(data: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data.join(CATALOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn open(store: &Store) -> (Arc<Projections>, Catalog) {
    let projections = Arc::new(Projections::new(store.engine.clone()));
    let (catalog, failed) = Catalog::open(Arc::clone(&projections), store.dir.path()).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    (projections, catalog)
}

#[test]
fn the_embedded_catalog_keeps_each_generation_in_a_file() {
    let store = Store::new();
    let data = store.dir.path();
    let (projections, catalog) = open(&store);
    assert_eq!(
        catalog.apply(&counts("$2")).unwrap(),
        [Applied::Registered {
            name: "counts".to_owned()
        }]
    );
    assert_eq!(files(data), ["counts.g1.toml"]);

    // A definition the target refuses registers nothing and leaves no file.
    let e = catalog.apply(BAD_SQL).unwrap_err();
    assert!(matches!(e, CatalogError::Projection(_)), "{e:?}");
    assert_eq!(files(data), ["counts.g1.toml"]);
    assert_eq!(projections.list().len(), 1);

    // A rebuild's text is stored under its generation; the swapped-away one goes at the next
    // open.
    let placed = store.append("acct-1", "Deposited", 4);
    projections.wait_for("counts", placed, WAIT).unwrap();
    assert_eq!(
        catalog.apply(&counts("$2 * 10")).unwrap(),
        [Applied::Rebuilding {
            name: "counts".to_owned(),
            generation: 2
        }]
    );
    assert_eq!(files(data), ["counts.g1.toml", "counts.g2.toml"]);
    eventually("the rebuild to swap in", || {
        let status = projections.status("counts").unwrap();
        status.generation == 2 && status.rebuild.is_none()
    });
    let definitions = catalog.definitions();
    drop(catalog);
    projections.shutdown();

    let (projections, catalog) = open(&store);
    assert_eq!(catalog.definitions(), definitions);
    assert_eq!(files(data), ["counts.g2.toml"]);
    let placed = store.append("acct-2", "Deposited", 1);
    projections.wait_for("counts", placed, WAIT).unwrap();
    projections.shutdown();
    let rows = SqliteTarget::open(data.join(annals_projections::DEFAULT_SQLITE_FILE))
        .unwrap()
        .query_rows("SELECT stream, total FROM counts ORDER BY stream")
        .unwrap();
    assert_eq!(
        rows,
        [
            vec![Some("acct-1".to_owned()), Some("40".to_owned())],
            vec![Some("acct-2".to_owned()), Some("10".to_owned())]
        ]
    );
}
