//! The event as declarative effects send it ([`event_json`]) and the RFC 3339 time text it and
//! the `created_rfc3339` parameter use.
//!
//! Kept on their own because they are meant to be replaced as one piece: nothing else in the
//! definition code depends on how the event document or the time is spelled.

use annals_core::{ContentType, EventRecord};

/// The event as effects send it: `id`, `stream`, `revision`, `position`, `event_type`,
/// `created` (RFC 3339), `data` and `metadata` (the documents when JSON, else their text, or
/// null when empty).
pub fn event_json(event: &EventRecord) -> serde_json::Value {
    let document = |bytes: &[u8]| {
        if bytes.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        })
    };
    serde_json::json!({
        "id": event.id.to_string(),
        "stream": event.stream.as_str(),
        "revision": event.revision.0,
        "position": event.position.0,
        "event_type": event.event_type.as_str(),
        "content_type": if event.content_type == ContentType::Json { "application/json" } else { "application/octet-stream" },
        "created": rfc3339(event.created.0),
        "data": document(&event.data),
        "metadata": document(&event.metadata),
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the Unix epoch.
pub(super) fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let micros = nanos.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
