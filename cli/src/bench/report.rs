//! What a load phase measured, and how the bench prints it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use ovation_proto::gifting as gpb;

use super::load::Call;

/// What the calls of a load phase returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub completed: u64,
    pub rejected: u64,
    pub compensated: u64,
    pub pending: u64,
    pub needs_operator: u64,
    pub unspecified: u64,
    /// Failed calls by error kind (gRPC code, or the baseline's error class).
    pub errors: BTreeMap<String, u64>,
    /// One error message of each kind, to explain them.
    pub error_samples: BTreeMap<String, String>,
}

impl Outcomes {
    /// Counts what one call came to.
    pub fn record(&mut self, call: Call) {
        match call {
            Call::Ended(gpb::SagaStatus::Completed) => self.completed += 1,
            Call::Ended(gpb::SagaStatus::Rejected) => self.rejected += 1,
            Call::Ended(gpb::SagaStatus::Compensated) => self.compensated += 1,
            Call::Ended(gpb::SagaStatus::Pending) => self.pending += 1,
            Call::Ended(gpb::SagaStatus::NeedsOperator) => self.needs_operator += 1,
            Call::Ended(_) => self.unspecified += 1,
            Call::Failed { kind, message } => self.error(kind, message),
        }
    }

    fn error(&mut self, kind: String, message: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.error_samples.entry(kind).or_insert(message);
    }

    pub fn merge(&mut self, other: Outcomes) {
        self.completed += other.completed;
        self.rejected += other.rejected;
        self.compensated += other.compensated;
        self.pending += other.pending;
        self.needs_operator += other.needs_operator;
        self.unspecified += other.unspecified;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, m) in other.error_samples {
            self.error_samples.entry(k).or_insert(m);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.completed
            + self.rejected
            + self.compensated
            + self.pending
            + self.needs_operator
            + self.unspecified
            + self.error_count()
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "COMPLETED {}, REJECTED {}, COMPENSATED {}, PENDING {}",
            self.completed, self.rejected, self.compensated, self.pending
        );
        if self.needs_operator > 0 {
            let _ = write!(s, ", NEEDS_OPERATOR {}", self.needs_operator);
        }
        if self.unspecified > 0 {
            let _ = write!(s, ", no status {}", self.unspecified);
        }
        let _ = write!(s, ", errors {}", self.error_count());
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = write!(s, " ({})", kinds.join(", "));
        }
        s
    }
}

/// A load phase's measurements.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub latency_us: Histogram<u64>,
    pub outcomes: Outcomes,
    /// From the first send to the last answer.
    pub wall: Duration,
    /// What an open-loop phase scheduled and dropped (`None`: closed loop).
    pub open_loop: Option<OpenLoop>,
}

/// An open-loop phase's schedule, as it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenLoop {
    /// Offered rate, gifts per second.
    pub rate: u32,
    /// Gifts that came due.
    pub scheduled: u64,
    /// Gifts not sent because `--rate-inflight-max` sends were outstanding.
    pub dropped: u64,
    /// From the start to the last gift's due time (its send).
    pub sending: Duration,
}

impl OpenLoop {
    /// Sends made per second: over the sending window plus one interval (N sends on
    /// schedule span N - 1 intervals), so a run on schedule achieves its offered rate.
    pub fn achieved_rate(&self) -> f64 {
        let interval = Duration::from_secs(1) / self.rate.max(1);
        per_second(self.scheduled - self.dropped, self.sending + interval)
    }
}

/// The figures compared between the suite and the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub gifts_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Figures {
    pub fn of(result: &LoadResult) -> Figures {
        let h = &result.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Figures {
            gifts_per_sec: per_second(result.outcomes.completed, result.wall),
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// `count` per second of `wall`; 0 for an empty interval.
pub fn per_second(count: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1_000.0)
}

/// `a ÷ b`, if both are meaningful.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a >= 0.0 && b > 0.0).then(|| a / b)
}

pub fn render_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 0.1 => format!("{r:.2}x"),
        Some(r) => format!("{r:.3}x"),
        None => "n/a".into(),
    }
}

/// The side-by-side table of suite and baseline.
pub fn render_comparison(suite: &Figures, baseline: &Figures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:<18}{:>14}{:>14}{:>18}",
        "", "suite", "baseline", "suite / baseline"
    );
    let _ = writeln!(
        s,
        "  {:<18}{:>14.1}{:>14.1}{:>18}",
        "gifts/s",
        suite.gifts_per_sec,
        baseline.gifts_per_sec,
        render_ratio(ratio(suite.gifts_per_sec, baseline.gifts_per_sec))
    );
    for (name, a, b) in [
        ("p50 latency ms", suite.p50_us, baseline.p50_us),
        ("p99 latency ms", suite.p99_us, baseline.p99_us),
        ("p999 latency ms", suite.p999_us, baseline.p999_us),
    ] {
        let _ = writeln!(
            s,
            "  {:<18}{:>14}{:>14}{:>18}",
            name,
            ms(a),
            ms(b),
            render_ratio(ratio(a as f64, b as f64))
        );
    }
    s
}

pub fn render_result(label: &str, result: &LoadResult) -> String {
    let f = Figures::of(result);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{label}: {} calls in {:.2} s",
        result.outcomes.total(),
        result.wall.as_secs_f64()
    );
    let _ = writeln!(s, "  outcomes    {}", result.outcomes.render());
    for (kind, message) in &result.outcomes.error_samples {
        let _ = writeln!(s, "  e.g. {kind}: {}", truncate(message, 200));
    }
    if let Some(open) = &result.open_loop {
        let _ = writeln!(
            s,
            "  open loop   offered {} gifts/s, sent {} of {} due ({:.1}/s over {:.2} s), \
             dropped {} (in-flight bound full); latency from each gift's due time",
            open.rate,
            open.scheduled - open.dropped,
            open.scheduled,
            open.achieved_rate(),
            open.sending.as_secs_f64(),
            open.dropped
        );
    }
    let _ = writeln!(s, "  throughput  {:.1} completed gifts/s", f.gifts_per_sec);
    let _ = writeln!(
        s,
        "  latency ms  p50 {}  p99 {}  p999 {}  max {}",
        ms(f.p50_us),
        ms(f.p99_us),
        ms(f.p999_us),
        ms(f.max_us)
    );
    s
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::histogram;

    #[test]
    fn percentiles_throughput_and_ratios() {
        let mut h = histogram().unwrap();
        for us in 1..=1_000u64 {
            h.record(us * 1_000).unwrap();
        }
        let result = LoadResult {
            latency_us: h,
            outcomes: Outcomes {
                completed: 500,
                ..Outcomes::default()
            },
            wall: Duration::from_secs(2),
            open_loop: None,
        };
        let f = Figures::of(&result);
        assert_eq!(f.gifts_per_sec, 250.0);
        // 3 significant figures: within 0.1 %.
        assert!((f.p50_us as f64 - 500_000.0).abs() <= 500.0, "{}", f.p50_us);
        assert!((f.p99_us as f64 - 990_000.0).abs() <= 990.0, "{}", f.p99_us);
        assert!(
            (f.p999_us as f64 - 999_000.0).abs() <= 999.0,
            "{}",
            f.p999_us
        );
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(0), "0.00");
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(ratio(100.0, 400.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(render_ratio(ratio(100.0, 400.0)), "0.25x");
        assert_eq!(render_ratio(ratio(1.0, 40.0)), "0.025x");
        assert_eq!(render_ratio(None), "n/a");

        let empty = LoadResult {
            latency_us: histogram().unwrap(),
            outcomes: Outcomes::default(),
            wall: Duration::ZERO,
            open_loop: None,
        };
        let e = Figures::of(&empty);
        assert_eq!((e.gifts_per_sec, e.p99_us), (0.0, 0));
        let table = render_comparison(&f, &e);
        assert!(table.contains("gifts/s"), "{table}");
        assert!(table.contains("n/a"), "{table}");
        let table = render_comparison(&f, &f);
        assert!(table.contains("1.00x"), "{table}");
        let text = render_result("suite SendGift", &result);
        assert!(!text.contains("open loop"), "{text}");
        let open = LoadResult {
            open_loop: Some(OpenLoop {
                rate: 100,
                scheduled: 1_000,
                dropped: 10,
                sending: Duration::from_millis(9_990),
            }),
            ..result
        };
        let text = render_result("suite SendGift", &open);
        assert!(
            text.contains(
                "offered 100 gifts/s, sent 990 of 1000 due (99.0/s over 9.99 s), dropped 10"
            ),
            "{text}"
        );
    }

    #[test]
    fn outcomes_merge_and_render() {
        let mut a = Outcomes {
            completed: 3,
            ..Outcomes::default()
        };
        a.error("Unavailable".into(), "down".into());
        let mut b = Outcomes {
            rejected: 1,
            pending: 2,
            ..Outcomes::default()
        };
        b.error("Unavailable".into(), "still down".into());
        b.error("DeadlineExceeded".into(), "slow".into());
        a.merge(b);
        assert_eq!(a.total(), 9);
        assert_eq!(a.errors["Unavailable"], 2);
        assert_eq!(a.error_samples["Unavailable"], "down");
        let text = a.render();
        assert!(text.starts_with("COMPLETED 3, REJECTED 1"), "{text}");
        assert!(
            text.contains("errors 3 (DeadlineExceeded 1, Unavailable 2)"),
            "{text}"
        );
    }
}
