//! Instants, stored and compared as Unix milliseconds (one portable BIGINT in SQL).

use std::time::{SystemTime, UNIX_EPOCH};

/// An instant as milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

/// A window of creation times `[start, end)` a list is narrowed to; either bound may be
/// open. Built by the gRPC edge, which checks that `end` is after `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub start: Option<UnixMillis>,
    pub end: Option<UnixMillis>,
}

impl TimeWindow {
    /// The inclusive lower bound as a number for SQL (`i64::MIN` when open).
    pub fn start_ms(&self) -> i64 {
        self.start.map_or(i64::MIN, |t| t.0)
    }

    /// The exclusive upper bound as a number for SQL (`i64::MAX` when open).
    pub fn end_ms(&self) -> i64 {
        self.end.map_or(i64::MAX, |t| t.0)
    }

    /// Neither bound set: everything.
    pub fn is_unbounded(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }
}

/// Earliest instant accepted from a caller: 1970-01-01.
const MILLIS_MIN: i64 = 0;
/// Latest instant accepted from a caller: 9999-12-31, so arithmetic never nears overflow.
const MILLIS_MAX: i64 = 253_402_300_799_999;

impl UnixMillis {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// From protobuf `Timestamp` parts; out-of-range instants are refused.
    pub fn from_parts(seconds: i64, nanos: i32) -> Result<Self, String> {
        if !(0..1_000_000_000).contains(&nanos) {
            return Err("nanos must be between 0 and 999,999,999".into());
        }
        let ms = seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(i64::from(nanos / 1_000_000)))
            .filter(|ms| (MILLIS_MIN..=MILLIS_MAX).contains(ms))
            .ok_or("must be between 1970-01-01 and 9999-12-31")?;
        Ok(UnixMillis(ms))
    }

    /// Protobuf `Timestamp` parts (seconds, nanos).
    pub fn to_parts(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(1000);
        let nanos = (self.0.rem_euclid(1000) * 1_000_000) as i32;
        (seconds, nanos)
    }
}

/// Where a service reads the time from. Rules that wait hours or days (diamond maturity,
/// velocity windows, cooling-off) take it from here, so tests move the clock instead of
/// sleeping; production runs on [`Clock::system`].
#[derive(Clone, Debug)]
pub struct Clock(ClockSource);

#[derive(Clone, Debug)]
enum ClockSource {
    System,
    Manual(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Clock {
        Clock(ClockSource::System)
    }

    /// A clock that stands still at `start` until a test [`advance`](Clock::advance)s it.
    /// Clones share the same time.
    pub fn manual(start: UnixMillis) -> Clock {
        Clock(ClockSource::Manual(std::sync::Arc::new(
            std::sync::atomic::AtomicI64::new(start.0),
        )))
    }

    /// The current instant.
    pub fn now(&self) -> UnixMillis {
        match &self.0 {
            ClockSource::System => UnixMillis::now(),
            ClockSource::Manual(ms) => UnixMillis(ms.load(std::sync::atomic::Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward by `ms` (saturating). A no-op on the system clock.
    pub fn advance(&self, ms: i64) {
        if let ClockSource::Manual(now) = &self.0 {
            let _ = now.fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |t| Some(t.saturating_add(ms)),
            );
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual(UnixMillis(1_000));
        let twin = clock.clone();
        assert_eq!(clock.now(), UnixMillis(1_000));
        twin.advance(3_600_000);
        assert_eq!(clock.now(), UnixMillis(3_601_000));
        clock.advance(i64::MAX);
        assert_eq!(twin.now(), UnixMillis(i64::MAX));
    }
}
