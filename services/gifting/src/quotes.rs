//! Gift prices, remembered for a moment: the saga's first step (what does this gift cost,
//! what share does the creator get) answered from what the catalog said a moment ago
//! instead of one QuoteGift per gift.
//!
//! Why it is safe: a gift's version and an economy version never change once written
//! (the catalog only adds versions), so a remembered quote is exactly what the catalog
//! answered for that version. What can change is which version is current; a remembered
//! quote is used for at most `ttl` (`OVATION_GIFTING_QUOTE_CACHE_MS`, 1 s by default), so a
//! price change or a disabled gift reaches every send within that time, as the wallet's
//! cached packages do (docs/economy.md). The saga records the versions it used either way.
//!
//! Only successful quotes are remembered, and one whose active window does not contain the
//! send time is not used (the catalog answers those, with its refusal). Bounded by
//! [`ENTRIES_MAX`] gifts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ovation_proto::catalog as catalog_pb;
use ovation_types::UnixMillis;

use crate::domain::Quote;

/// Most gifts remembered at once (a catalog holds far fewer sendable gifts).
pub const ENTRIES_MAX: usize = 4_096;

#[derive(Clone, Debug)]
struct Remembered {
    at: Instant,
    gift_version: i64,
    unit_price_coins: i64,
    creator_share_bps: i32,
    economy_version: i64,
    active_from: Option<UnixMillis>,
    active_until: Option<UnixMillis>,
}

/// Recent quotes by gift id.
#[derive(Debug)]
pub struct QuoteCache {
    ttl: Duration,
    gifts: Mutex<HashMap<String, Remembered>>,
}

impl QuoteCache {
    /// A cache whose quotes last `ttl` (zero: nothing is remembered).
    pub fn new(ttl: Duration) -> Self {
        QuoteCache {
            ttl,
            gifts: Mutex::new(HashMap::new()),
        }
    }

    /// The quote for `quantity` of `gift_id` at `now`, if one the catalog gave is fresh
    /// and the gift is sendable at `now` by it.
    pub fn quote(&self, gift_id: &str, quantity: i32, now: UnixMillis) -> Option<Quote> {
        let gifts = self.gifts.lock().unwrap_or_else(|p| p.into_inner());
        let gift = gifts.get(gift_id)?;
        if gift.at.elapsed() >= self.ttl
            || gift.active_from.is_some_and(|from| now < from)
            || gift.active_until.is_some_and(|until| now >= until)
        {
            return None;
        }
        Some(Quote {
            gift_version: gift.gift_version,
            unit_price_coins: gift.unit_price_coins,
            total_coins: gift.unit_price_coins.checked_mul(i64::from(quantity))?,
            creator_share_bps: gift.creator_share_bps,
            economy_version: gift.economy_version,
        })
    }

    /// Remembers what the catalog answered for `gift_id`.
    pub fn remember(&self, gift_id: &str, reply: &catalog_pb::QuoteGiftResponse) {
        if self.ttl.is_zero() {
            return;
        }
        let Some(gift) = reply.gift.as_ref() else {
            return;
        };
        let remembered = Remembered {
            at: Instant::now(),
            gift_version: gift.version,
            unit_price_coins: gift.coin_price,
            creator_share_bps: reply.creator_share_bps,
            economy_version: reply.economy_version,
            active_from: gift.active_from.as_ref().map(millis),
            active_until: gift.active_until.as_ref().map(millis),
        };
        let mut gifts = self.gifts.lock().unwrap_or_else(|p| p.into_inner());
        if gifts.len() >= ENTRIES_MAX && !gifts.contains_key(gift_id) {
            let ttl = self.ttl;
            gifts.retain(|_, g| g.at.elapsed() < ttl);
            if gifts.len() >= ENTRIES_MAX {
                gifts.clear();
            }
        }
        gifts.insert(gift_id.to_owned(), remembered);
    }
}

fn millis(t: &prost_types::Timestamp) -> UnixMillis {
    UnixMillis(
        t.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(t.nanos) / 1_000_000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(version: i64, price: i64, until: Option<i64>) -> catalog_pb::QuoteGiftResponse {
        catalog_pb::QuoteGiftResponse {
            gift: Some(catalog_pb::Gift {
                gift_id: "rose".into(),
                version,
                coin_price: price,
                enabled: true,
                active_until: until.map(|ms| prost_types::Timestamp {
                    seconds: ms / 1_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            total_coins: price,
            creator_share_bps: 5_000,
            economy_version: 3,
            creator_diamonds: price / 2,
        }
    }

    #[test]
    fn a_fresh_quote_prices_any_quantity_by_the_remembered_version() {
        let cache = QuoteCache::new(Duration::from_secs(60));
        assert_eq!(cache.quote("rose", 1, UnixMillis(0)), None);
        cache.remember("rose", &reply(7, 10, None));
        let q = cache.quote("rose", 3, UnixMillis(0)).expect("remembered");
        assert_eq!(
            q,
            Quote {
                gift_version: 7,
                unit_price_coins: 10,
                total_coins: 30,
                creator_share_bps: 5_000,
                economy_version: 3,
            }
        );
        assert_eq!(cache.quote("tulip", 1, UnixMillis(0)), None);
    }

    #[test]
    fn an_expired_or_out_of_window_quote_is_asked_again() {
        let cache = QuoteCache::new(Duration::from_millis(1));
        cache.remember("rose", &reply(1, 10, None));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.quote("rose", 1, UnixMillis(0)), None, "expired");

        let cache = QuoteCache::new(Duration::from_secs(60));
        cache.remember("rose", &reply(1, 10, Some(2_000)));
        assert!(cache.quote("rose", 1, UnixMillis(1_999)).is_some());
        assert_eq!(
            cache.quote("rose", 1, UnixMillis(2_000)),
            None,
            "window ended"
        );

        let off = QuoteCache::new(Duration::ZERO);
        off.remember("rose", &reply(1, 10, None));
        assert_eq!(off.quote("rose", 1, UnixMillis(0)), None, "disabled");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = QuoteCache::new(Duration::from_secs(60));
        for n in 0..ENTRIES_MAX + 10 {
            cache.remember(&format!("gift{n}"), &reply(1, 1, None));
        }
        assert!(cache.gifts.lock().unwrap().len() <= ENTRIES_MAX);
    }
}
