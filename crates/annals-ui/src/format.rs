//! Numbers as the pages show them: byte sizes, rates, durations, and event payloads (JSON
//! pretty-printed, anything else as hex).

/// `1.5 MiB`, `12 KiB`, `800 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {name}"),
    }
}

/// Events a second, one decimal under 100.
pub(crate) fn rate(r: f64) -> String {
    if r < 100.0 {
        format!("{r:.1}/s")
    } else {
        format!("{r:.0}/s")
    }
}

/// Seconds, one decimal under a minute, else minutes or hours.
pub(crate) fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3_600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3_600.0)
    }
}

/// A payload to show: pretty JSON when it is JSON, else a hex dump (16 bytes a line). Returns
/// (text, whether it is JSON).
pub(crate) fn payload(bytes: &[u8]) -> (String, bool) {
    if bytes.is_empty() {
        return (String::new(), false);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Ok(text) = serde_json::to_string_pretty(&value)
    {
        return (text, true);
    }
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        out += &format!("{:08x}  {}\n", i * 16, hex.join(" "));
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(800), "800 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(rate(2.345), "2.3/s");
        assert_eq!(rate(1234.5), "1234/s");
        assert_eq!(seconds(5.0), "5.0 s");
        assert_eq!(seconds(90.0), "1.5 min");
        assert_eq!(
            payload(br#"{"a":1}"#),
            ("{\n  \"a\": 1\n}".to_owned(), true)
        );
        assert_eq!(payload(&[0, 255, 16]).0, "00000000  00 ff 10\n");
        assert!(!payload(b"<script>").1);
    }
}
