//! Printing a benchmark's figures: pretty JSON for people, or exactly one JSON line for scripts
//! (`--json`), always as the last thing on stdout.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::{BenchError, Context};

pub(crate) fn emit(figures: &impl Serialize, json: bool) -> Result<(), BenchError> {
    let text = if json {
        serde_json::to_string(figures)?
    } else {
        serde_json::to_string_pretty(figures)?
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context(|| "cannot print the figures".to_owned())
}

/// Rounds a figure for printing (JSON floats with 15 digits help nobody).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
