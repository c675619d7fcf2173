//! The first corpus of every target: a few valid inputs each (a seeded log, a real record, real
//! protobuf calls and HTTP requests, a definition file, names and filters), from which the fuzzer
//! mutates. `fuzz/corpus/<target>/seed-*` are these bytes; the test `seeds_are_committed`
//! writes them when `ANNALS_WRITE_SEEDS` is set and otherwise checks that they are there (not
//! their bytes: the seeded store's events get fresh ids and times).

use annals_log::FaultStorage;

use crate::net::GRPC_MESSAGE_SEPARATOR;
use crate::{Violation, store};

/// One seed: its target, its file name, its bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed.
pub fn seeds() -> Result<Vec<Seed>, Violation> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, format!("seed-{name}"), bytes));
    };
    let (_, segment) = store::seeded_segment("seeds")?;
    let records = segment.get(64..).unwrap_or_default().to_vec();
    add("segment_recovery", "raw-segment", prefixed(0, &segment));
    add("segment_recovery", "records", prefixed(1, &records));
    add(
        "segment_recovery",
        "torn-tail",
        prefixed(2, records.get(..40).unwrap_or_default()),
    );
    add("segment_recovery", "bit-flip", prefixed(3, &[100, 0, 0xff]));
    let first_record = first_frame(&records);
    add("record_decode", "record", prefixed(0, &first_record));
    add(
        "record_decode",
        "record-fix-crc",
        prefixed(1, &first_record),
    );
    add("index_open", "empty", Vec::new());
    add("index_open", "valid-index", seeded_index()?);
    add(
        "index_open",
        "garbage",
        b"redb\x1a\x0a\xa9\x0d\x0a".repeat(40),
    );
    grpc_seeds(&mut add);
    http_seeds(&mut add);
    add(
        "projection_toml",
        "definition",
        PROJECTION.as_bytes().to_vec(),
    );
    add("projection_toml", "with-data", {
        let mut b = PROJECTION.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(br#"{"id":"o1","customer":"c","total":12,"lines":[{"sku":"x"}]}"#);
        b
    });
    for (i, name) in [
        "order-1",
        "$$order-1",
        "$ce-order",
        "a\u{0}b",
        "{\"streams\":[\"a\",\"b\"]}",
    ]
    .iter()
    .enumerate()
    {
        add(
            "stream_name",
            &format!("name-{i}"),
            name.as_bytes().to_vec(),
        );
    }
    add(
        "filter_regex",
        "lookahead",
        b"\x00^(?!\\$).*\x00order-1".to_vec(),
    );
    add("filter_regex", "backtracking", {
        let mut b = b"\x00^(a|a)*(?!a)b\x00".to_vec();
        b.extend_from_slice(&[b'a'; 64]);
        b
    });
    add(
        "filter_regex",
        "prefixes",
        b"\x03Order\nCart\x00OrderPlaced".to_vec(),
    );
    Ok(out)
}

fn prefixed(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend_from_slice(rest);
    out
}

/// The first commit record of `records` (its length from its header).
fn first_frame(records: &[u8]) -> Vec<u8> {
    let len = records
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    records.get(..16 + len).unwrap_or(records).to_vec()
}

/// The seeded store's own index file.
fn seeded_index() -> Result<Vec<u8>, Violation> {
    let image: FaultStorage = store::seeded("seeds")?;
    image
        .bytes(annals_index::INDEX_FILE)
        .ok_or_else(|| Violation::new("seeds", "the seeded store has no index"))
}

const PROJECTION: &str = r#"[[projection]]
name = "order_totals"
source = { category = "order" }
tables = ["order_totals"]
setup = ["CREATE TABLE {order_totals} (id TEXT PRIMARY KEY, customer TEXT, total BIGINT)"]
on_error = { policy = "park", attempts = 5, backoff_ms = 50, backoff_max_ms = 5000 }

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {order_totals} (id, customer, total) VALUES ($1, $2, $3)"
params = ["data.id", "data.customer", "data.lines[0].sku"]
"#;

// A minimal protobuf writer for the gRPC seeds: fields are (number, wire type) keys followed by
// a varint or a length and bytes.
fn key(field: u32, wire: u32) -> Vec<u8> {
    varint(u64::from((field << 3) | wire))
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn num(field: u32, v: u64) -> Vec<u8> {
    let mut out = key(field, 0);
    out.extend(varint(v));
    out
}

fn bytes(field: u32, b: &[u8]) -> Vec<u8> {
    let mut out = key(field, 2);
    out.extend(varint(b.len() as u64));
    out.extend_from_slice(b);
    out
}

fn msg(field: u32, parts: &[Vec<u8>]) -> Vec<u8> {
    bytes(field, &parts.concat())
}

fn stream_id(field: u32, name: &str) -> Vec<u8> {
    msg(field, &[bytes(3, name.as_bytes())])
}

fn proposed(field: u32) -> Vec<u8> {
    msg(
        field,
        &[
            msg(1, &[bytes(2, b"0b5a4c7e-1f6d-4c53-9c55-1d6f0f1e2a3b")]),
            msg(2, &[bytes(1, b"type"), bytes(2, b"OrderPlaced")]),
            msg(
                2,
                &[bytes(1, b"content-type"), bytes(2, b"application/json")],
            ),
            bytes(4, br#"{"id":"o2"}"#),
        ],
    )
}

fn grpc_seeds(add: &mut impl FnMut(&'static str, &str, Vec<u8>)) {
    let method = |i: u8, messages: &[Vec<u8>]| {
        let mut out = vec![i];
        out.extend(messages.join(GRPC_MESSAGE_SEPARATOR));
        out
    };
    let empty = || Vec::new();
    // Streams.Read: a stream forwards, $all with a regex filter, a subscription to a stream.
    let read_stream = msg(
        1,
        &[
            msg(1, &[stream_id(1, "order-1"), msg(3, &[])]),
            num(5, 10),
            msg(8, &[]),
            msg(9, &[msg(2, &[])]),
        ],
    );
    let read_all = msg(
        1,
        &[
            msg(2, &[msg(2, &[])]),
            num(5, 100),
            msg(7, &[msg(1, &[bytes(1, b"^order")]), num(3, 10), num(5, 1)]),
            msg(9, &[msg(1, &[])]),
        ],
    );
    let subscribe = msg(
        1,
        &[
            msg(1, &[stream_id(1, "order-1"), msg(4, &[])]),
            msg(6, &[]),
            msg(8, &[]),
            msg(9, &[msg(2, &[])]),
        ],
    );
    add("grpc_request", "read-stream", method(0, &[read_stream]));
    add("grpc_request", "read-all-filtered", method(0, &[read_all]));
    add("grpc_request", "subscribe", method(0, &[subscribe]));
    let append_options = msg(1, &[stream_id(1, "order-1"), msg(4, &[])]);
    add(
        "grpc_request",
        "append",
        method(1, &[append_options, proposed(2)]),
    );
    let expect_none = msg(1, &[stream_id(1, "cart-7"), msg(3, &[])]);
    add(
        "grpc_request",
        "delete",
        method(2, std::slice::from_ref(&expect_none)),
    );
    add("grpc_request", "tombstone", method(3, &[expect_none]));
    let batch = [
        msg(1, &[bytes(2, b"5f3a6b1c-2d4e-4f60-8a7b-9c0d1e2f3a4b")]),
        msg(2, &[stream_id(1, "order-1"), msg(4, &[])]),
        proposed(3),
        num(4, 1),
    ]
    .concat();
    add("grpc_request", "batch-append", method(4, &[batch]));
    let create = msg(
        1,
        &[
            msg(4, &[stream_id(1, "order-1"), msg(3, &[])]),
            bytes(2, b"g"),
            msg(
                3,
                &[num(5, 10), num(7, 1), num(8, 10), num(9, 5), num(10, 100)],
            ),
        ],
    );
    add("grpc_request", "persistent-create", method(5, &[create]));
    for (i, name) in [
        (6, "persistent-update"),
        (7, "persistent-delete"),
        (8, "persistent-read"),
        (9, "persistent-info"),
        (10, "persistent-replay"),
        (11, "persistent-list"),
        (12, "persistent-restart"),
        (13, "features"),
        (14, "gossip"),
    ] {
        add("grpc_request", name, method(i, &[empty()]));
    }
    add("grpc_request", "raw-frame", vec![0x80, 0, 0, 0, 0, 2, 8, 1]);
}

fn http_seeds(add: &mut impl FnMut(&'static str, &str, Vec<u8>)) {
    let route = |i: u8, lines: &[&[u8]]| {
        let mut out = vec![i];
        out.extend(lines.join(&b'\n'));
        out
    };
    let append = br#"{"events":[{"type":"OrderPlaced","data":{"id":"o2"}}]}"#;
    add(
        "http_body",
        "append",
        route(0, &[b"order-1", b"", b"", append]),
    );
    add(
        "http_body",
        "append-expected",
        route(0, &[b"order-1", b"2", b"", append]),
    );
    add(
        "http_body",
        "read-stream",
        route(1, &[b"order-1", b"", b"from=0&limit=2"]),
    );
    add(
        "http_body",
        "read-all",
        route(2, &[b"", b"", b"from=1&limit=10"]),
    );
    let settings = br#"{"maxRetryCount":3,"strategy":"RoundRobin","filter":{"on":"streamName","regex":"^order"}}"#;
    add(
        "http_body",
        "persistent-create",
        route(3, &[b"order-1", b"g", b"", settings]),
    );
    add(
        "http_body",
        "persistent-update",
        route(4, &[b"order-1", b"g", b"", settings]),
    );
    add(
        "http_body",
        "persistent-delete",
        route(5, &[b"order-1", b"g"]),
    );
    add(
        "http_body",
        "replay-parked",
        route(6, &[b"order-1", b"g", b"stopAt=10"]),
    );
    add(
        "http_body",
        "projections",
        route(9, &[b"", b"", b"", PROJECTION.as_bytes()]),
    );
    add("http_body", "live", route(10, &[b"", b"", b"from=1"]));
}
