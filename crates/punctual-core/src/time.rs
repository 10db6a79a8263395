//! Instants and the injected clock.
//!
//! All time in punctual comes from a `Clock`. Store methods take `now` as an argument, so tests
//! control time and every backend judges "due" and "expired" the same way.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC instant with microsecond precision, counted from the Unix epoch.
///
/// Stored as `*_us` integers in SQL. Microseconds (not milliseconds) so lateness can be measured
/// below a millisecond.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis.saturating_mul(1_000))
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// This instant plus `duration`, saturating at the ends of the range.
    #[allow(
        clippy::should_implement_trait,
        reason = "saturating, and named so that `Timestamp - Timestamp` stays meaningless"
    )]
    pub fn add(self, duration: Duration) -> Timestamp {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }

    /// This instant minus `duration`, saturating at the ends of the range.
    #[allow(clippy::should_implement_trait, reason = "saturating, like `add`")]
    pub fn sub(self, duration: Duration) -> Timestamp {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(micros))
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        let micros = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_micros(micros.unsigned_abs())
    }

    /// Signed difference `self - other` in microseconds.
    pub fn micros_since(self, other: Timestamp) -> i64 {
        self.0.saturating_sub(other.0)
    }

    pub fn from_system_time(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp::UNIX_EPOCH.add(after),
            Err(before) => Timestamp::UNIX_EPOCH.sub(before.duration()),
        }
    }

    pub fn to_chrono(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    pub fn from_chrono<Tz: chrono::TimeZone>(time: &chrono::DateTime<Tz>) -> Timestamp {
        Timestamp(time.timestamp_micros())
    }

    /// RFC 3339 text with millisecond precision, for people and logs.
    pub fn to_rfc3339(self) -> String {
        self.to_chrono()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// RFC 3339 text with every digit the instant has (to the microsecond), for the wire: it
    /// parses back to the same instant.
    pub fn to_rfc3339_exact(self) -> String {
        self.to_chrono()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// Parses RFC 3339 text (`2026-11-29T09:00:00Z`, `2026-11-29T10:00:00+01:00`).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| Timestamp::from_chrono(&time))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

/// Where "now" comes from. One implementation reads the system clock; tests inject their own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_round_trips() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.add(Duration::from_millis(5)).as_millis(), 1_005);
        assert_eq!(t.sub(Duration::from_millis(5)).as_millis(), 995);
        assert_eq!(
            t.duration_since(t.add(Duration::from_secs(1))),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_micros(i64::MAX)
                .add(Duration::MAX)
                .as_micros(),
            i64::MAX
        );
        let text = Timestamp::from_millis(1_764_400_000_123).to_rfc3339();
        assert_eq!(
            Timestamp::parse_rfc3339(&text),
            Some(Timestamp::from_millis(1_764_400_000_123))
        );
        assert_eq!(Timestamp::from_millis(-1).as_millis(), -1);
        assert_eq!(Timestamp::from_micros(-1).as_millis(), -1);
        for micros in [
            1_764_400_000_123_456,
            1_764_400_000_000_000,
            1_764_400_000_120_000,
        ] {
            let exact = Timestamp::from_micros(micros);
            assert_eq!(
                Timestamp::parse_rfc3339(&exact.to_rfc3339_exact()),
                Some(exact)
            );
        }
    }
}
