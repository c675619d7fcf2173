//! Replays every committed corpus file of every fuzz target (`fuzz/corpus/<target>/`) through the
//! target's body on the stable toolchain, so a crash once found stays fixed; and checks that the
//! seeds the corpus starts from are committed (`ANNALS_WRITE_SEEDS=1` writes them).

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    reason = "the helpers of a test fail it by panicking"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use annals_fuzz::{TARGETS, panic_is_tolerated, seeds};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// Panics no code caught (in the engine's threads or spawned tasks too), as libFuzzer's hook
/// would have seen them.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_is_tolerated(info) {
                PANICS.fetch_add(1, Ordering::SeqCst);
                previous(info);
            }
        }));
    });
}

fn replay(target: &str) {
    replay_dir(target, &corpus_root().join(target));
}

fn replay_dir(target: &str, dir: &Path) {
    // One replay at a time, so a panic counted belongs to the input being replayed.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    watch_panics();
    let (_, body) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let before = PANICS.load(Ordering::SeqCst);
        if let Err(violation) = body(&data) {
            panic!("{}: {violation}", file.display());
        }
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            before,
            "{}: a panic",
            file.display()
        );
    }
}

#[test]
fn segment_recovery_corpus() {
    replay("segment_recovery");
}

#[test]
fn record_decode_corpus() {
    replay("record_decode");
}

#[test]
fn index_open_corpus() {
    replay("index_open");
}

#[test]
fn grpc_request_corpus() {
    replay("grpc_request");
}

#[test]
fn http_body_corpus() {
    replay("http_body");
}

#[test]
fn projection_toml_corpus() {
    replay("projection_toml");
}

#[test]
fn stream_name_corpus() {
    replay("stream_name");
}

#[test]
fn filter_regex_corpus() {
    replay("filter_regex");
}

#[test]
fn seeds_are_committed() {
    let write = std::env::var_os("ANNALS_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds::seeds().unwrap() {
        let path = corpus_root().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            // Seeds hold fresh ids and times, so only their presence is checked.
            assert!(
                path.exists(),
                "{} is missing (ANNALS_WRITE_SEEDS=1 writes it)",
                path.display()
            );
        }
    }
}

/// Found by `index_open` (docs/fuzzing.md): a mutated index file that redb opens without
/// complaint, whose checkpoint matches the log but whose stream entries lost a stream, was
/// trusted, and the stream read as not found. Open now runs redb's integrity check and compares
/// the index with the log's tail, and rebuilds the index when either fails.
#[test]
fn damaged_index_that_opens_is_detected() {
    replay_dir("index_open", &corpus_root().join("../findings/index_open"));
}

/// Found by `http_body` (docs/fuzzing.md): a subscription route whose path is not UTF-8
/// answered axum's plain-text 400, not the API's JSON error; every route now takes its path
/// through `annals_http::ApiPath`.
#[test]
fn non_utf8_subscription_path_is_a_json_error() {
    replay_dir("http_body", &corpus_root().join("../findings/http_body"));
}
