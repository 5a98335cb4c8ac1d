//! The window of `ovation audit`: the gift sagas it judges (`--since`/`--until`, RFC 3339)
//! and how far around them debits and credits are read (see the module doc of `audit`).

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// How far before `--since` and after `--until` debits and credits are read: 15 minutes.
///
/// A saga's debit and credit are posted right after it is recorded (milliseconds). With
/// gifting's default retry budget (12 attempts per step, each ≤ 5 s of step timeout plus
/// ≤ 5 s of backoff: ≤ 2 min per step, ≤ 6 min for resolve, debit and credit) and a
/// restart (10 s lease), a saga that finishes on its own has both within ~6 minutes; 15
/// minutes leaves room for that and for clock skew between the three services. Anything
/// later is looked up by operation id (see the module doc).
pub const SLACK_MS: i64 = 15 * 60 * 1_000;

/// Latest instant the services accept (9999-12-31T23:59:59.999Z).
pub const MILLIS_MAX: i64 = 253_402_300_799_999;

/// The time window of `ovation audit` (flags only: a window left in the environment
/// would silently narrow every later audit).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WindowArgs {
    /// Audit the gift sagas created at or after this instant (RFC 3339, e.g.
    /// 2025-06-01T00:00:00Z or 2025-06-01T02:00:00.250+02:00). Default: from the first.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub since: Option<i64>,
    /// Audit the gift sagas created before this instant (exclusive; RFC 3339).
    /// Default: up to the last.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub until: Option<i64>,
}

/// Parses an RFC 3339 instant (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, `T` or a
/// space, any case) into Unix milliseconds. A fraction finer than a millisecond rounds
/// up, which keeps `[since, until)` exact on the services' millisecond timestamps.
pub fn parse_rfc3339(raw: &str) -> Result<i64, String> {
    let invalid = || format!("{raw:?} is not an RFC 3339 instant (e.g. 2025-06-01T00:00:00Z)");
    if !is_strict_rfc3339(raw.as_bytes()) {
        return Err(invalid());
    }
    let at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| invalid())?;
    let ms = (at.unix_timestamp_nanos() + 999_999).div_euclid(1_000_000);
    i64::try_from(ms)
        .ok()
        .filter(|ms| (0..=MILLIS_MAX).contains(ms))
        .ok_or_else(|| format!("{raw:?} is not between 1970-01-01 and 9999-12-31"))
}

/// Whether `raw` stays within what the audit takes where `time`'s RFC 3339 parser takes
/// more: the separator is `T`, `t` or a space (not any byte), the seconds are never a leap
/// second's 60, and a fraction has at most nine digits (nanoseconds).
fn is_strict_rfc3339(raw: &[u8]) -> bool {
    let separator = matches!(raw.get(10), Some(b'T' | b't' | b' '));
    let leap_second = raw.get(17..19) == Some(b"60".as_slice());
    let fraction_digits = match raw.get(19) {
        Some(b'.') => raw
            .iter()
            .skip(20)
            .take_while(|b| b.is_ascii_digit())
            .count(),
        _ => 0,
    };
    separator && !leap_second && fraction_digits <= 9
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2025-06-01T00:00:00.000Z`).
pub fn format_rfc3339(ms: i64) -> String {
    // `time` stops at year 9999, and a read bound may pass it (`--until` within the slack
    // of the end). The Gregorian calendar repeats every 400 years (146,097 days), so the
    // instant is placed in the 400 years from 1970 and its year moved back by the cycles.
    const CYCLE_MS: i64 = 146_097 * 86_400_000;
    let at =
        OffsetDateTime::UNIX_EPOCH.saturating_add(Duration::milliseconds(ms.rem_euclid(CYCLE_MS)));
    let year = i64::from(at.year()) + 400 * ms.div_euclid(CYCLE_MS);
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Which sagas an audit covers (see the module doc): those created in `[since, until)`,
/// unbounded where unset; debits and credits are read `slack_ms` around that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub slack_ms: i64,
}

impl Window {
    /// Every saga, debit and credit.
    pub const EVERYTHING: Window = Window {
        since: None,
        until: None,
        slack_ms: SLACK_MS,
    };

    /// The window of the command line; `--since` must be before `--until`.
    pub fn new(args: &WindowArgs) -> Result<Window, String> {
        if let (Some(since), Some(until)) = (args.since, args.until)
            && since >= until
        {
            return Err(format!(
                "--since ({}) must be before --until ({})",
                format_rfc3339(since),
                format_rfc3339(until)
            ));
        }
        Ok(Window {
            since: args.since,
            until: args.until,
            ..Window::EVERYTHING
        })
    }

    pub fn is_everything(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether an instant is in `[since, until)`: a saga created then is this window's,
    /// and so is the orphan check of a debit or credit created then.
    pub fn contains(&self, at: i64) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }

    /// Where debits and credits are read from (inclusive) and to (exclusive).
    pub fn read_from(&self) -> Option<i64> {
        self.since.map(|s| s.saturating_sub(self.slack_ms))
    }

    pub fn read_until(&self) -> Option<i64> {
        self.until.map(|u| u.saturating_add(self.slack_ms))
    }

    pub fn reads(&self, at: i64) -> bool {
        self.read_from().is_none_or(|s| at >= s) && self.read_until().is_none_or(|u| at < u)
    }

    /// The `audit window:` line.
    pub fn describe(&self) -> String {
        if self.is_everything() {
            return "everything: every saga, debit and credit (I1, I2: the whole ledgers)".into();
        }
        let bound = |at: Option<i64>, open: &str| at.map_or(open.to_string(), format_rfc3339);
        format!(
            "sagas created in [{}, {}); their debits and credits read from {} to {} \
             ({} min slack), later ones by id; I1, I2: the whole ledgers",
            bound(self.since, "-∞"),
            bound(self.until, "+∞"),
            bound(self.read_from(), "-∞"),
            bound(self.read_until(), "+∞"),
            self.slack_ms / 60_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditCommand;

    #[test]
    fn instants_are_rfc3339() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-06-01T00:00:00Z", 1_748_736_000_000),
            ("2025-06-01t02:00:00.25+02:00", 1_748_736_000_250),
            ("2025-05-31 19:30:00.000-04:30", 1_748_736_000_000),
            // Finer than a millisecond rounds up.
            ("2025-06-01T00:00:00.0000001Z", 1_748_736_000_001),
            ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
            ("9999-12-31T23:59:59.999Z", MILLIS_MAX),
            ("2025-06-01T00:00:00-00:00", 1_748_736_000_000),
        ];
        for (raw, ms) in ok {
            assert_eq!(parse_rfc3339(raw), Ok(ms), "{raw}");
        }
        for bad in [
            "",
            "1748736000000",
            "2025-06-01",
            "2025-06-01T00:00:00",
            "2025-06-01T00:00:00+0200",
            "2025-06-01T24:00:00Z",
            "2025-06-01T00:00:60Z",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-06-01T00:00:00.Z",
            "2025-06-01T00:00:00.1234567890Z",
            "1969-12-31T23:59:59Z",
            "+025-06-01T00:00:00Z",
            "2025-06-01T00:00:00ZZ",
            "2025-06-01T00:00:00Zé",
            // What `time` alone would take: any separator, a leap second.
            "2025-06-01X00:00:00Z",
            "2016-12-31T23:59:60Z",
            "2025-06-01T00:00:00+24:00",
            "9999-12-31T23:59:59.999-00:01",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
        for ms in [0, 1, 999, 1_748_736_000_250, 951_782_400_000, MILLIS_MAX] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339(1_748_736_000_250),
            "2025-06-01T00:00:00.250Z"
        );
        // The read bounds of the earliest and the latest windows.
        assert_eq!(format_rfc3339(-SLACK_MS), "1969-12-31T23:45:00.000Z");
        assert_eq!(
            format_rfc3339(MILLIS_MAX + SLACK_MS),
            "10000-01-01T00:14:59.999Z"
        );
    }

    #[test]
    fn the_window_comes_from_the_command_line() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            audit: AuditCommand,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                std::iter::once("audit").chain(args.iter().copied()),
            )
            .map_err(|e| e.to_string())
            .and_then(|c| Window::new(&c.audit.window))
        };
        assert_eq!(parse(&[]), Ok(Window::EVERYTHING));
        let w = parse(&[
            "--since",
            "2025-06-01T00:00:00Z",
            "--until",
            "2025-06-02T00:00:00Z",
        ])
        .unwrap();
        assert_eq!(
            (w.since, w.until),
            (Some(1_748_736_000_000), Some(1_748_822_400_000))
        );
        assert!(w.contains(1_748_736_000_000) && !w.contains(1_748_822_400_000));
        assert!(
            w.describe()
                .contains("[2025-06-01T00:00:00.000Z, 2025-06-02T00:00:00.000Z)")
        );
        assert!(Window::EVERYTHING.describe().starts_with("everything"));
        let open = parse(&["--until", "2025-06-02T00:00:00Z"]).unwrap();
        assert!(open.contains(0) && open.read_from().is_none());
        assert!(
            parse(&[
                "--since",
                "2025-06-02T00:00:00Z",
                "--until",
                "2025-06-01T00:00:00Z"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--since",
                "2025-06-01T00:00:00Z",
                "--until",
                "2025-06-01T00:00:00Z"
            ])
            .is_err()
        );
        assert!(parse(&["--since", "1748736000000"]).is_err());
    }
}
