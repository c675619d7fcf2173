//! Declarative definitions: the format, the statements a definition produces for sample events,
//! every rejection, the targets' check of bad SQL, and a declarative projection run end to end.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    ContentType, EventRecord, EventType, ExpectedRevision, NewEvent, Position, Revision,
    StreamName, Timestamp,
};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_projections::{
    Definition, DefinitionError, DefinitionTarget, Effect, ErrorPolicy, HandlerContext, Mode,
    OnFailure, PostgresTarget, Projections, Resolver, Source, SqliteTarget, Statement, Target,
    TargetError, Value, parse_definitions, resolve_objects,
};
use annals_testkit::postgres::TempPostgres;
use bytes::Bytes;

const EXAMPLE: &str = r#"
[[projection]]
name = "order_totals"
target = "postgres://annals@localhost/views"
source = { category = "order" }
tables = ["order_totals"]
indexes = ["order_totals_by_customer"]
setup = [
  "CREATE TABLE {order_totals} (id TEXT PRIMARY KEY, customer TEXT, total BIGINT NOT NULL, shipped_at TEXT)",
  "CREATE INDEX {order_totals_by_customer} ON {order_totals}(customer)",
]
partitions = 4
on_error = { policy = "park", attempts = 5, backoff_ms = 50, backoff_max_ms = 5000 }

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {order_totals} (id, customer, total) VALUES ($1, $2, $3)"
params = ["data.id", "data.customer", "data.total"]

[[projection.handler]]
event_type = "OrderShipped"
sql = "UPDATE {order_totals} SET shipped_at = $2 WHERE id = $1"
params = ["data.id", "created_rfc3339"]
effects = [
  { http = { url = "https://hooks.example/shipped", method = "put" } },
  { message = { subject = "orders.shipped" } },
]

[[projection]]
name = "audit"
target = "sqlite:audit.db"
source = { all = true }
tables = ["audit"]
setup = ["CREATE TABLE {audit} (position BIGINT PRIMARY KEY, stream TEXT, doc TEXT)"]

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {audit} (position, stream, doc) VALUES ($1, $2, $3)"
params = ["position", "stream", "data"]
"#;

fn event(stream: &str, revision: u64, position: u64, event_type: &str, data: &str) -> EventRecord {
    EventRecord {
        id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        stream: StreamName::new(stream).unwrap(),
        revision: Revision(revision),
        position: Position(position),
        event_type: EventType::new(event_type).unwrap(),
        content_type: ContentType::Json,
        created: Timestamp(1_700_000_000_123_456_789),
        data: Bytes::from(data.to_owned()),
        metadata: Bytes::from_static(b"{\"user\":{\"name\":\"ann\",\"roles\":[\"a\",\"b\"]}}"),
    }
}

/// Runs a definition's handler on `event` for generation 3.
fn run(definition: &Definition, mode: Mode, event: &EventRecord) -> (Vec<Statement>, Vec<Effect>) {
    let mut handler = (definition.spec.handler)();
    let mut resolver = Resolver::new(definition.spec.objects.clone().into(), 3);
    let mut statements = Vec::new();
    let mut effects = Vec::new();
    let mut ctx = HandlerContext::new(mode, &mut resolver, &mut statements, &mut effects);
    handler.handle(event, &mut ctx).unwrap();
    (statements, effects)
}

#[test]
fn the_full_example_parses() {
    let definitions = parse_definitions(EXAMPLE).unwrap();
    assert_eq!(definitions.len(), 2);
    let orders = &definitions[0];
    let spec = &orders.spec;
    assert_eq!(spec.name, "order_totals");
    assert_eq!(
        orders.target,
        Some(DefinitionTarget::Postgres(
            "postgres://annals@localhost/views".to_owned()
        ))
    );
    assert_eq!(spec.source, Source::Category("order".to_owned()));
    assert_eq!(spec.tables, ["order_totals"]);
    assert_eq!(spec.objects, ["order_totals", "order_totals_by_customer"]);
    assert_eq!(spec.setup.len(), 2);
    assert_eq!(
        spec.statements,
        [
            "INSERT INTO {order_totals} (id, customer, total) VALUES ($1, $2, $3)",
            "UPDATE {order_totals} SET shipped_at = $2 WHERE id = $1",
        ]
    );
    assert_eq!(spec.partitions, 4);
    assert_eq!(
        spec.policy,
        ErrorPolicy {
            attempts: 5,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(5000),
            on_failure: OnFailure::Park,
        }
    );
    let audit = &definitions[1];
    assert_eq!(
        audit.target,
        Some(DefinitionTarget::Sqlite("audit.db".into()))
    );
    assert_eq!(audit.spec.source, Source::All);
    assert_eq!(audit.spec.partitions, 1);
    assert_eq!(audit.spec.policy, ErrorPolicy::default());

    // Other source forms, and no target.
    let d = parse_definitions(
        r#"
        [[projection]]
        name = "p"
        source = { event_types = ["A", "B"] }
        [[projection.handler]]
        event_type = "A"
        effects = [{ message = { subject = "s" } }]
        [[projection]]
        name = "q"
        source = { streams = ["s-1"] }
        [[projection.handler]]
        event_type = "A"
        sql = "SELECT 1"
        "#,
    )
    .unwrap();
    assert_eq!(
        d[0].spec.source,
        Source::EventTypes(vec!["A".into(), "B".into()])
    );
    assert_eq!(d[1].spec.source, Source::Streams(vec!["s-1".into()]));
    assert_eq!(d[0].target, None);
    assert!(parse_definitions("").unwrap().is_empty());
}

#[test]
fn handlers_produce_the_expected_statements_and_effects() {
    let definitions = parse_definitions(EXAMPLE).unwrap();
    let orders = &definitions[0];

    let placed = event(
        "order-1",
        0,
        17,
        "OrderPlaced",
        r#"{"id":"o1","customer":"c9","total":1250}"#,
    );
    let (statements, effects) = run(orders, Mode::Live, &placed);
    assert_eq!(
        statements,
        [Statement {
            sql: Arc::from(
                "INSERT INTO order_totals__g3 (id, customer, total) VALUES ($1, $2, $3)"
            ),
            params: vec![
                Value::Text("o1".into()),
                Value::Text("c9".into()),
                Value::Integer(1250)
            ],
        }]
    );
    assert!(effects.is_empty());

    let shipped = event("order-1", 1, 18, "OrderShipped", r#"{"id":"o1"}"#);
    let (statements, effects) = run(orders, Mode::Live, &shipped);
    assert_eq!(
        statements,
        [Statement {
            sql: Arc::from("UPDATE order_totals__g3 SET shipped_at = $2 WHERE id = $1"),
            params: vec![
                Value::Text("o1".into()),
                Value::Text("2023-11-14T22:13:20.123456Z".into()),
            ],
        }]
    );
    assert_eq!(effects.len(), 2);
    match &effects[0] {
        Effect::Http {
            method,
            url,
            content_type,
            body,
        } => {
            assert_eq!(method, "PUT");
            assert_eq!(url, "https://hooks.example/shipped");
            assert_eq!(content_type, "application/json");
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["stream"], "order-1");
            assert_eq!(body["position"], 18);
            assert_eq!(body["type"], "OrderShipped");
            assert_eq!(body["isJson"], true);
            assert_eq!(body["data"]["id"], "o1");
            assert_eq!(body["id"], "01234567-89ab-cdef-0123-456789abcdef");
        }
        other => panic!("expected an HTTP effect, got {other:?}"),
    }
    assert!(matches!(&effects[1], Effect::Message { subject, .. } if subject == "orders.shipped"));
    // Replays declare no effects, but run the same statements.
    let (replayed, effects) = run(orders, Mode::Replay, &shipped);
    assert_eq!(replayed, statements);
    assert!(effects.is_empty());
    // Types without an entry are passed over.
    let (statements, _) = run(orders, Mode::Live, &event("order-1", 2, 19, "Other", "{}"));
    assert!(statements.is_empty());
}

#[test]
fn every_parameter_source_binds_as_documented() {
    let text = r#"
    [[projection]]
    name = "all_sources"
    source = { all = true }
    [[projection.handler]]
    event_type = "Tested"
    sql = "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19"
    params = ["stream", "category", "revision", "position", "event_type", "event_id", "created",
              "created_rfc3339", "data", "data.n", "data.r", "data.s", "data.b", "data.nothing",
              "data.items[1].sku", "data.items", "data.obj", "metadata.user.roles[0]", "data.items[5]"]
    "#;
    let definitions = parse_definitions(text).unwrap();
    let data = r#"{"n":-5,"r":1.5,"s":"x","b":true,"nothing":null,"items":[{"sku":"a"},{"sku":"b"}],"obj":{"k":[1]}}"#;
    let e = event("cart-9", 4, 40, "Tested", data);
    let (statements, _) = run(&definitions[0], Mode::Live, &e);
    let params = &statements[0].params;
    assert_eq!(
        params,
        &vec![
            Value::Text("cart-9".into()),
            Value::Text("cart".into()),
            Value::Integer(4),
            Value::Integer(40),
            Value::Text("Tested".into()),
            Value::Text("01234567-89ab-cdef-0123-456789abcdef".into()),
            Value::Integer(1_700_000_000_123),
            Value::Text("2023-11-14T22:13:20.123456Z".into()),
            Value::Json(
                serde_json::from_str::<serde_json::Value>(data)
                    .unwrap()
                    .to_string()
            ),
            Value::Integer(-5),
            Value::Real(1.5),
            Value::Text("x".into()),
            Value::Bool(true),
            Value::Null,
            Value::Text("b".into()),
            Value::Json(r#"[{"sku":"a"},{"sku":"b"}]"#.into()),
            Value::Json(r#"{"k":[1]}"#.into()),
            Value::Text("a".into()),
            Value::Null,
        ]
    );

    // Data that is not JSON is the event's failure, for the error policy to handle.
    let mut handler = (definitions[0].spec.handler)();
    let mut resolver = Resolver::new(Arc::from(Vec::<String>::new()), 1);
    let (mut statements, mut effects) = (Vec::new(), Vec::new());
    let mut ctx = HandlerContext::new(Mode::Live, &mut resolver, &mut statements, &mut effects);
    let err = handler
        .handle(&event("cart-9", 5, 41, "Tested", "not json"), &mut ctx)
        .unwrap_err();
    assert!(err.0.contains("data is not JSON"), "{err}");
}

fn rejection(text: &str) -> String {
    match parse_definitions(text) {
        Ok(d) => panic!("accepted: {d:?}\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// A valid projection with one line replaced or added, for the rejection cases.
fn with(name: &str, extra: &str, handler_extra: &str) -> String {
    format!(
        r#"
[[projection]]
name = "{name}"
source = {{ category = "order" }}
tables = ["t"]
setup = ["CREATE TABLE {{t}} (id TEXT)"]
{extra}
[[projection.handler]]
event_type = "A"
sql = "INSERT INTO {{t}} (id) VALUES ($1)"
params = ["stream"]
{handler_extra}
"#
    )
}

#[test]
fn each_mistake_is_rejected_naming_projection_and_field() {
    assert!(parse_definitions(&with("ok", "", "")).is_ok());
    let cases: Vec<(String, &[&str])> = vec![
        // Syntax and unknown keys.
        (
            "[[projection]\n".to_owned(),
            &["TOML", "projection definitions"],
        ),
        ("other = 1\n".to_owned(), &["unknown top-level key `other`"]),
        (
            with("p", "colour = \"red\"", ""),
            &["`p`", "unknown field `colour`"],
        ),
        (
            with("p", "", "colour = \"red\""),
            &["`p`", "handler[0] (A)", "unknown field `colour`"],
        ),
        (
            with("p", "on_error = { policy = \"park\", retries = 3 }", ""),
            &["`p`", "on_error", "unknown field `retries`"],
        ),
        (
            with("p", "", "effects = [{ smoke = { url = \"x\" } }]"),
            &["`p`", "handler[0]", "smoke"],
        ),
        // Names.
        (
            with("Orders", "", ""),
            &["`Orders`", "name", "[a-z][a-z0-9_]*"],
        ),
        (with(&"p".repeat(49), "", ""), &["name", "at most 48 bytes"]),
        (
            with("p", "indexes = [\"T-1\"]", ""),
            &["`p`", "indexes", "`T-1`"],
        ),
        (
            with("p", "indexes = [\"t\"]", ""),
            &["`p`", "indexes", "declared twice"],
        ),
        (
            format!("{}{}", with("dup", "", ""), with("dup", "", "")),
            &["`dup` is defined more than once"],
        ),
        // Sources and targets.
        (
            with("p", "", "").replace(
                "source = { category = \"order\" }",
                "source = { category = \"order\", all = true }",
            ),
            &["`p`", "source", "exactly one"],
        ),
        (
            with("p", "", "").replace("{ category = \"order\" }", "{ category = \"o\", kind = 1 }"),
            &["`p`", "source", "unknown field `kind`"],
        ),
        (
            with("p", "", "").replace("{ category = \"order\" }", "{ all = false }"),
            &["`p`", "source", "only be true"],
        ),
        (
            with("p", "", "").replace("{ category = \"order\" }", "{ event_types = [] }"),
            &["`p`", "source", "must not be empty"],
        ),
        (
            with("p", "", "").replace("{ category = \"order\" }", "{ category = \"a-b\" }"),
            &["`p`", "source", "`a-b`"],
        ),
        (
            with("p", "target = \"mysql://x\"", ""),
            &["`p`", "target", "mysql://x"],
        ),
        // Placeholders, params and braces.
        (
            with("p", "", "").replace("VALUES ($1)", "VALUES ($2)"),
            &[
                "`p`",
                "handler[0] (A).sql",
                "`$2` has no matching parameter",
            ],
        ),
        (
            with("p", "", "").replace(
                "params = [\"stream\"]",
                "params = [\"stream\", \"position\"]",
            ),
            &[
                "`p`",
                "handler[0] (A).params",
                "parameter 2 (`position`) is never used",
            ],
        ),
        (
            with("p", "", "").replace("INSERT INTO {t}", "INSERT INTO {orders}"),
            &["`p`", "handler[0] (A).sql", "`{orders}` is not declared"],
        ),
        (
            with("p", "", "").replace("CREATE TABLE {t}", "CREATE TABLE {nope}"),
            &["`p`", "setup[0]", "`{nope}` is not declared"],
        ),
        (
            with("p", "", "").replace("[\"stream\"]", "[\"data.items[x]\"]"),
            &["`p`", "handler[0] (A).params", "`data.items[x]`"],
        ),
        (
            with("p", "", "").replace("[\"stream\"]", "[\"streamname\"]"),
            &[
                "`p`",
                "handler[0] (A).params",
                "unknown parameter source `streamname`",
            ],
        ),
        (
            with("p", "", "").replace("[\"stream\"]", "[\"data..x\"]"),
            &["`p`", "params", "empty key"],
        ),
        (
            with("p", "", "").replace("sql = \"INSERT INTO {t} (id) VALUES ($1)\"", ""),
            &["`p`", "handler[0] (A).params", "params given without sql"],
        ),
        (
            with("p", "", "effects = [{ http = { url = \"ftp://x\" } }]"),
            &["`p`", "handler[0] (A).effects[0]", "ftp://x"],
        ),
        (
            with(
                "p",
                "",
                "effects = [{ http = { url = \"https://x\", method = \"BREW\" } }]",
            ),
            &["`p`", "effects[0]", "BREW"],
        ),
        // Policies and partitions.
        (
            with("p", "on_error = { policy = \"retry\" }", ""),
            &[
                "`p`",
                "on_error.policy",
                "`retry` is not one of stop, skip, park",
            ],
        ),
        (
            with("p", "on_error = { attempts = 0 }", ""),
            &["`p`", "on_error.attempts", "not 0"],
        ),
        (
            with(
                "p",
                "on_error = { backoff_ms = 500, backoff_max_ms = 10 }",
                "",
            ),
            &["`p`", "on_error.backoff_max_ms"],
        ),
        (
            with("p", "on_error = { backoff_ms = -1 }", ""),
            &["`p`", "on_error.backoff_ms"],
        ),
        (
            with("p", "partitions = 0", ""),
            &["`p`", "partitions", "not 0"],
        ),
        (
            with("p", "partitions = 65", ""),
            &["`p`", "partitions", "not 65"],
        ),
        // A projection without handlers.
        (
            "[[projection]]\nname = \"p\"\nsource = { all = true }\n".to_owned(),
            &["`p`", "handler", "no [[projection.handler]]"],
        ),
    ];
    for (text, expected) in cases {
        let message = rejection(&text);
        for part in expected {
            assert!(
                message.contains(part),
                "error `{message}` lacks `{part}` for:\n{text}"
            );
        }
    }
    // The error is typed: field and projection are separate.
    match parse_definitions(&with("p", "partitions = 0", "")) {
        Err(DefinitionError::Invalid {
            projection, field, ..
        }) => {
            assert_eq!(projection, "p");
            assert_eq!(field, "partitions");
        }
        other => panic!("{other:?}"),
    }
}

/// Resolves a definition's SQL for a scratch generation, as the runtime does before `check`.
fn resolved(definition: &Definition) -> (Vec<String>, Vec<String>) {
    let spec = &definition.spec;
    let setup = spec
        .setup
        .iter()
        .map(|s| resolve_objects(s, &spec.objects, 0))
        .collect();
    let statements = spec
        .statements
        .iter()
        .map(|s| resolve_objects(s, &spec.objects, 0))
        .collect();
    (setup, statements)
}

#[test]
fn both_targets_check_a_definition_with_bad_sql() {
    let good = &parse_definitions(EXAMPLE).unwrap()[0];
    let bad_text = EXAMPLE.replacen(
        "UPDATE {order_totals} SET shipped_at = $2",
        "UPDATE {order_totals} SET shipped_on = $2",
        1,
    );
    let bad = &parse_definitions(&bad_text).unwrap()[0];

    let dir = tempfile::tempdir().unwrap();
    let pg = TempPostgres::start();
    let mut targets: Vec<Box<dyn Target>> = vec![
        Box::new(SqliteTarget::open(dir.path().join("views.db")).unwrap()),
        Box::new(PostgresTarget::connect(&pg.url()).unwrap()),
    ];
    for target in &mut targets {
        let (setup, statements) = resolved(good);
        target.check(&setup, &statements).unwrap();
        let (setup, statements) = resolved(bad);
        match target.check(&setup, &statements) {
            Err(TargetError::Definition(message)) => {
                assert!(message.contains("statement 2"), "{target:?}: {message}");
                assert!(message.contains("shipped_on"), "{target:?}: {message}");
            }
            other => panic!("{target:?}: expected a definition error, got {other:?}"),
        }
        // Nothing was left behind by either check.
        let (setup, statements) = resolved(good);
        target.check(&setup, &statements).unwrap();
    }
}

fn append(engine: &Engine, stream: &str, event_type: &str, data: String) {
    engine
        .append(
            &StreamName::new(stream).unwrap(),
            ExpectedRevision::Any,
            vec![NewEvent::json(event_type, data).unwrap()],
        )
        .unwrap();
}

#[test]
fn a_declarative_projection_runs_on_the_sqlite_target() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let engine = Engine::open_dir(&dir.path().join("store"), config)
        .unwrap()
        .0;
    let text = r#"
    [[projection]]
    name = "totals"
    source = { category = "order" }
    tables = ["totals"]
    setup = ["CREATE TABLE {totals} (id TEXT PRIMARY KEY, customer TEXT, total BIGINT NOT NULL, lines TEXT)"]
    partitions = 2
    [[projection.handler]]
    event_type = "OrderPlaced"
    sql = "INSERT INTO {totals} (id, customer, total, lines) VALUES ($1, $2, $3, $4)"
    params = ["data.id", "data.customer", "data.total", "data.lines"]
    [[projection.handler]]
    event_type = "OrderAmended"
    sql = "UPDATE {totals} SET total = total + $2 WHERE id = $1"
    params = ["data.id", "data.delta"]
    "#;
    let definition = parse_definitions(text).unwrap().remove(0);
    for i in 0..20 {
        append(
            &engine,
            &format!("order-{i}"),
            "OrderPlaced",
            format!(
                r#"{{"id":"o{i}","customer":"c{}","total":{i},"lines":[{i}]}}"#,
                i % 3
            ),
        );
        append(
            &engine,
            &format!("order-{i}"),
            "OrderAmended",
            format!(r#"{{"id":"o{i}","delta":100}}"#),
        );
        append(
            &engine,
            &format!("other-{i}"),
            "OrderPlaced",
            "{}".to_owned(),
        );
    }
    let projections = Projections::new(engine.clone());
    let db = dir.path().join("views.db");
    projections
        .register(definition.spec, Box::new(SqliteTarget::open(&db).unwrap()))
        .unwrap();
    projections
        .wait_for("totals", engine.head(), Duration::from_secs(20))
        .unwrap();
    let mut reader = SqliteTarget::open(&db).unwrap();
    let rows = reader
        .query_rows("SELECT id, customer, total, lines FROM totals ORDER BY total")
        .unwrap();
    let expected: Vec<Vec<Option<String>>> = (0..20)
        .map(|i| {
            vec![
                Some(format!("o{i}")),
                Some(format!("c{}", i % 3)),
                Some((100 + i).to_string()),
                Some(format!("[{i}]")),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    projections.shutdown();
}
