//! What a run sends: when the load stops, who sends each gift to whom, how viewers are
//! funded, and the ids it gives everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::args::GIFTS_MAX;

/// Most coin purchases made for one viewer during setup.
pub const PURCHASES_PER_VIEWER_MAX: u64 = 1_000;
/// A duration run funds viewers as if the suite sustained this many gifts per second.
pub const DURATION_FUNDING_GIFTS_PER_SEC: u64 = 2_000;

/// When the load phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadLimit {
    Gifts(u64),
    Duration(Duration),
}

impl LoadLimit {
    /// The most gifts the phase may send.
    pub fn gift_cap(self) -> u64 {
        match self {
            LoadLimit::Gifts(n) => n,
            LoadLimit::Duration(_) => GIFTS_MAX,
        }
    }

    /// The gifts viewers are funded for.
    pub fn planned_gifts(self) -> u64 {
        match self {
            LoadLimit::Gifts(n) => n,
            LoadLimit::Duration(d) => d
                .as_secs()
                .saturating_mul(DURATION_FUNDING_GIFTS_PER_SEC)
                .min(GIFTS_MAX),
        }
    }

    /// The gifts viewers are funded for when an open loop sends `rate` gifts per second
    /// (a duration run sends about rate × duration).
    pub fn planned_gifts_at(self, rate: Option<u32>) -> u64 {
        match (self, rate) {
            (LoadLimit::Duration(d), Some(rate)) => d
                .as_secs()
                .saturating_mul(u64::from(rate))
                .clamp(1, GIFTS_MAX),
            _ => self.planned_gifts(),
        }
    }

    pub fn describe(self) -> String {
        match self {
            LoadLimit::Gifts(n) => format!("{n} gifts"),
            LoadLimit::Duration(d) => format!("{} s (at most {GIFTS_MAX} gifts)", d.as_secs()),
        }
    }

    /// Seconds the load may last at most, for token lifetimes.
    pub fn secs(self) -> u64 {
        match self {
            LoadLimit::Duration(d) => d.as_secs(),
            // A count run's length is unknown: tokens last a day (23 h + the hour the
            // bench adds).
            LoadLimit::Gifts(_) => 23 * 3_600,
        }
    }
}

/// Hands the workers of a load phase the numbers of the gifts to send, each once, until
/// the limit: the gift count, or the deadline.
#[derive(Clone, Debug)]
pub struct Turns {
    next: Arc<AtomicU64>,
    cap: u64,
    deadline: Option<Instant>,
}

impl Turns {
    /// Turns of a load phase that started at `started`.
    pub fn new(limit: LoadLimit, started: Instant) -> Turns {
        Turns {
            next: Arc::new(AtomicU64::new(0)),
            cap: limit.gift_cap(),
            deadline: match limit {
                LoadLimit::Duration(d) => Some(started + d),
                LoadLimit::Gifts(_) => None,
            },
        }
    }

    /// The next gift to send, or `None` once the phase is over.
    pub fn next(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.cap).then_some(i)
    }
}

/// Purchases of `package_coins` each viewer needs for its share of `planned_gifts`
/// (gift i comes from viewer i mod V, so no viewer sends more than ⌈N/V⌉).
pub fn purchases_needed(
    planned_gifts: u64,
    viewers: u32,
    coins_per_gift: i64,
    package_coins: i64,
) -> Result<u64, String> {
    if viewers == 0 || coins_per_gift <= 0 || package_coins <= 0 {
        return Err("viewers, gift price and package coins must be positive".into());
    }
    let coins = coins_per_viewer(planned_gifts, viewers, coins_per_gift)
        .ok_or("the coins each viewer needs overflow")?;
    let purchases = coins.div_ceil(package_coins as u64).max(1);
    if purchases > PURCHASES_PER_VIEWER_MAX {
        return Err(format!(
            "each viewer would need {purchases} purchases of {package_coins} coins \
             (at most {PURCHASES_PER_VIEWER_MAX}): add --viewers or pick a bigger --seed-package"
        ));
    }
    Ok(purchases)
}

/// Coins one viewer spends on ⌈N/V⌉ gifts.
pub fn coins_per_viewer(planned_gifts: u64, viewers: u32, coins_per_gift: i64) -> Option<u64> {
    planned_gifts
        .div_ceil(u64::from(viewers.max(1)))
        .checked_mul(u64::try_from(coins_per_gift).ok()?)
}

/// Which viewer sends gift `i`, and to which creator.
pub fn assign(i: u64, viewers: u32, creators: u32, hot_creator: bool) -> (usize, usize) {
    let viewer = (i % u64::from(viewers.max(1))) as usize;
    let creator = if hot_creator {
        0
    } else {
        (i % u64::from(creators.max(1))) as usize
    };
    (viewer, creator)
}

/// A fresh run id: 10 hex digits, lowercase (it names a database too).
pub fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// The ids of a run's viewers: `bench-<run>-v0`, `-v1`…
pub fn viewer_ids(run: &str, viewers: u32) -> Vec<String> {
    (0..viewers).map(|v| format!("bench-{run}-v{v}")).collect()
}

/// The ids of a run's creators: `bench-<run>-c0`, `-c1`…
pub fn creator_ids(run: &str, creators: u32) -> Vec<String> {
    (0..creators).map(|c| format!("bench-{run}-c{c}")).collect()
}

/// The idempotency key of gift `i` (the baseline's journal keeps it too).
pub fn gift_key(run: &str, i: u64) -> String {
    format!("bench-{run}-gift-{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_funded_for_their_share_of_the_gifts() {
        // 2000 roses over 100 viewers: 20 coins each, one package.
        assert_eq!(purchases_needed(2_000, 100, 1, 10_000), Ok(1));
        // 2001 gifts: some viewer sends 21.
        assert_eq!(purchases_needed(2_001, 100, 10_000, 10_000), Ok(21));
        assert_eq!(purchases_needed(1, 1, 30_000, 10_000), Ok(3));
        assert!(purchases_needed(10_000_000, 1, 50_000, 10_000).is_err());
        assert!(purchases_needed(10, 0, 1, 10_000).is_err());
        assert!(purchases_needed(10, 1, 0, 10_000).is_err());
        assert_eq!(
            LoadLimit::Duration(Duration::from_secs(10)).planned_gifts(),
            10 * DURATION_FUNDING_GIFTS_PER_SEC
        );
        // An open loop funds for its rate; a count run for its count.
        let ten_secs = LoadLimit::Duration(Duration::from_secs(10));
        assert_eq!(ten_secs.planned_gifts_at(Some(50)), 500);
        assert_eq!(
            ten_secs.planned_gifts_at(None),
            10 * DURATION_FUNDING_GIFTS_PER_SEC
        );
        assert_eq!(LoadLimit::Gifts(7).planned_gifts_at(Some(1_000)), 7);
    }

    #[test]
    fn gifts_spread_over_viewers_and_creators_unless_hot() {
        let (mut viewers, mut creators) = (vec![0u64; 7], vec![0u64; 3]);
        for i in 0..70 {
            let (v, c) = assign(i, 7, 3, false);
            viewers[v] += 1;
            creators[c] += 1;
        }
        assert!(viewers.iter().all(|&n| n == 10));
        assert!(creators.iter().all(|&n| (23..=24).contains(&n)));
        assert!((0..70).all(|i| assign(i, 7, 3, true).1 == 0));
    }

    #[test]
    fn run_ids_are_ten_lowercase_hex_digits() {
        let id = run_id();
        assert_eq!(id.len(), 10);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_duration_run_stops_at_its_deadline_and_a_count_run_at_its_count() {
        let counted = Turns::new(LoadLimit::Gifts(3), Instant::now());
        let taken: Vec<u64> = std::iter::from_fn(|| counted.next()).collect();
        assert_eq!(taken, vec![0, 1, 2]);
        let started = Instant::now() - Duration::from_secs(2);
        let timed = Turns::new(LoadLimit::Duration(Duration::from_secs(1)), started);
        assert_eq!(timed.next(), None);
    }
}
