//! [`Timestamp`]: when an event committed, and its one conversion to RFC 3339 text.
//!
//! Every surface that shows a time as text (the HTTP API, the CLI, projection parameters and
//! effects) goes through [`Timestamp::rfc3339`], so they agree to the nanosecond; the calendar
//! arithmetic is the `time` crate's.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time of an event's commit, in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp(pub i64);

/// How many digits of the second's fraction [`Timestamp::rfc3339`] writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SubsecondDigits {
    /// Nanoseconds (9 digits): all the precision a timestamp has.
    Nanos,
    /// Microseconds (6 digits, truncated): what SQL timestamp types hold, so a value a
    /// projection writes compares equal to the one the database stores.
    Micros,
}

impl Timestamp {
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(nanos)
    }

    /// .NET ticks (100 ns units) since the Unix epoch, as KurrentDB clients expect in `created`.
    pub fn unix_ticks(self) -> i64 {
        self.0 / 100
    }

    /// RFC 3339 text in UTC with a fixed number of fraction digits, e.g.
    /// `2023-11-14T22:13:20.000000123Z`. Times before 1970 count back from the epoch
    /// (`Timestamp(-1)` is `1969-12-31T23:59:59.999999999Z`).
    pub fn rfc3339(self, digits: SubsecondDigits) -> String {
        // Every i64 of nanoseconds (years 1677 to 2262) is within `time`'s range, so the
        // fallback to the epoch is never taken; it keeps this function total.
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut out = String::with_capacity(30);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        let _ = match digits {
            SubsecondDigits::Nanos => write!(out, "{:09}Z", t.nanosecond()),
            SubsecondDigits::Micros => write!(out, "{:06}Z", t.microsecond()),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instants whose text is known independently of any calendar code: the epoch, a leap day,
    /// one nanosecond before the epoch, the ends of the i64 range and a recent time.
    #[test]
    fn rfc3339_known_instants() {
        let nanos = |t: i64| Timestamp(t).rfc3339(SubsecondDigits::Nanos);
        let micros = |t: i64| Timestamp(t).rfc3339(SubsecondDigits::Micros);
        assert_eq!(nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            nanos(1_700_000_000_000_000_123),
            "2023-11-14T22:13:20.000000123Z"
        );
        assert_eq!(
            micros(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            nanos(1_709_210_096_000_000_789),
            "2024-02-29T12:34:56.000000789Z"
        );
        assert_eq!(nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(micros(-1_000), "1969-12-31T23:59:59.999999Z");
        assert_eq!(nanos(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(nanos(i64::MIN), "1677-09-21T00:12:43.145224192Z");
    }
}
