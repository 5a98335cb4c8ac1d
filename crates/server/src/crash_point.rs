//! Crash points: fault tests stop a service process at an exact moment that no signal
//! sent from outside could hit reliably, such as between a batch's commit and its reply.
//!
//! `OVATION_CRASH_POINT=<point>:<n>` makes the process abort (no reply, no cleanup, as a
//! SIGKILL would leave it) the `n`-th time it reaches `<point>`. Unset, as in every real
//! deployment, a point costs one relaxed atomic load. Points:
//! - `batch_committed`: a batch RPC (DebitCoinsBatch, CreditDiamondsBatch) has committed
//!   and not yet answered.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms a crash point.
pub const CRASH_POINT_VAR: &str = "OVATION_CRASH_POINT";

struct Armed {
    point: String,
    at: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(CRASH_POINT_VAR).ok().and_then(|v| parse(&v)))
        .as_ref()
}

fn parse(value: &str) -> Option<Armed> {
    let (point, at) = value.rsplit_once(':')?;
    let at = at.trim().parse::<u64>().ok().filter(|n| *n > 0)?;
    Some(Armed {
        point: point.trim().to_owned(),
        at,
        reached: AtomicU64::new(0),
    })
}

/// The process reached `point`: aborts it if this is the armed point's `n`-th time.
pub fn reached(point: &str) {
    let Some(armed) = armed() else {
        return;
    };
    if armed.point == point && armed.reached.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
        eprintln!("{CRASH_POINT_VAR}: aborting at {point} #{}", armed.at);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_armed_by_name_and_count() {
        let armed = parse("batch_committed:3").expect("valid");
        assert_eq!((armed.point.as_str(), armed.at), ("batch_committed", 3));
        assert!(parse("batch_committed").is_none());
        assert!(parse("batch_committed:0").is_none());
        assert!(parse("batch_committed:x").is_none());
    }
}
