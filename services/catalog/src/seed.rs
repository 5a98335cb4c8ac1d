//! The demo economy of docs/economy.md, written into an empty catalog on first start (turn it off
//! with `--no-seed`). Every number is data: admins change it through the API afterwards.

use ovation_store::db::Conn;
use ovation_store::{Db, StoreError};
use ovation_types::{Bps, Coins, Diamonds, Money, Name, ResourceId, Text, UnixMillis};

use crate::domain::{
    CoinPackage, DiamondLimit, EconomyParameters, Gift, GiftPrice, NewCoinPackage, NewGift,
    NewPromotion, Prices, Promotion, RuleHours, Window,
};
use crate::operations::{self, CatalogError};
use crate::store::{self, VersionRows};

/// (id, name, coins) of the demo gifts.
const GIFTS: &[(&str, &str, i64)] = &[
    ("rose", "Rose", 1),
    ("finger_heart", "Finger Heart", 5),
    ("doughnut", "Doughnut", 30),
    ("confetti", "Confetti", 100),
    ("galaxy", "Galaxy", 1_000),
    ("lion", "Lion", 29_999),
    ("universe", "Universe", 44_999),
];

/// (id, coins, USD cents) of the demo coin packages.
const PACKAGES: &[(&str, i64, i64)] = &[
    ("coins_100", 100, 139),
    ("coins_500", 500, 699),
    ("coins_1000", 1_000, 1_399),
    ("coins_5000", 5_000, 6_999),
    ("coins_10000", 10_000, 13_999),
];

/// How long the demo launch promotion runs from the first start.
const PROMOTION_DAYS: i64 = 365;

/// Seeds the demo economy if the catalog is empty. Returns whether it seeded.
pub async fn seed_if_empty(db: &Db) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    if !store::is_empty(&mut tx).await? {
        return Ok(false);
    }
    match seed(&mut tx, UnixMillis::now()).await {
        Ok(()) => {
            tx.commit().await?;
            tracing::info!("empty catalog seeded with the demo economy");
            Ok(true)
        }
        // Another replica seeded between our check and our insert: theirs stands.
        Err(e) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn seed(conn: &mut Conn, now: UnixMillis) -> Result<(), StoreError> {
    for &(id, name, price) in GIFTS {
        let gift = Gift::create(
            NewGift {
                id: valid(ResourceId::parse(id))?,
                name: valid(Name::parse(name))?,
                coin_price: valid(GiftPrice::parse(price))?,
                asset_url: valid(Text::parse(&format!(
                    "https://assets.ovation.dev/gifts/{id}.webp"
                )))?,
                enabled: true,
                window: Window::default(),
            },
            now,
        );
        plant(conn, gift).await?;
    }
    for &(id, coins, usd_cents) in PACKAGES {
        let package = CoinPackage::create(
            NewCoinPackage {
                id: valid(ResourceId::parse(id))?,
                name: valid(Name::parse(&format!("{coins} coins")))?,
                coins: valid(Coins::parse(coins))?,
                prices: valid(Prices::new(vec![valid(
                    Money::parse("USD", usd_cents).map_err(|(_, e)| e),
                )?]))?,
                enabled: true,
            },
            now,
        );
        plant(conn, package).await?;
    }
    let promotion = Promotion::create(
        NewPromotion {
            id: valid(ResourceId::parse("launch_bonus"))?,
            name: valid(Name::parse("Launch bonus: +10 % coins"))?,
            bonus_bps: 1_000,
            package_ids: Vec::new(),
            starts_at: now,
            ends_at: UnixMillis(now.0 + PROMOTION_DAYS * 86_400_000),
            per_user_cap: 3,
            enabled: true,
        },
        now,
    )
    .map_err(|e| StoreError::Config(e.to_string()))?;
    plant(conn, promotion).await?;
    plant(
        conn,
        EconomyParameters {
            version: 1,
            creator_share: valid(Bps::parse(5_000))?,
            payout_per_unit: valid(Money::parse("USD", 500).map_err(|(_, e)| e))?,
            diamonds_per_payout_unit: valid(Diamonds::parse(1_000))?,
            payout_minimum: valid(Diamonds::parse(1_000))?,
            // Three days pending before a cash-out, so a chargeback can claw them back.
            diamond_maturity: valid(RuleHours::parse(72))?,
            // Payout controls: at most 500 USD a creator a day, a review from 100 USD,
            // and two days before a payout may go to a newly set account.
            payout_daily_cap: valid(DiamondLimit::parse(100_000))?,
            payout_review_threshold: valid(DiamondLimit::parse(20_000))?,
            payout_account_cooling_off: valid(RuleHours::parse(48))?,
            created_at: now,
        },
    )
    .await?;
    Ok(())
}

/// Writes version 1 of a demo item; one already there is a start-up error.
async fn plant<V: VersionRows>(conn: &mut Conn, first: V) -> Result<(), StoreError> {
    match operations::create(conn, first).await {
        Ok(_) => Ok(()),
        Err(CatalogError::Store(e)) => Err(e),
        Err(CatalogError::AlreadyExists { id, .. }) => {
            Err(StoreError::Config(format!("seed item {id} already exists")))
        }
        Err(other) => Err(StoreError::Config(other.to_string())),
    }
}

/// The seed's constants are valid (the unit test below proves it); a mistake in them is
/// a start-up error, not a panic.
fn valid<T>(parsed: Result<T, String>) -> Result<T, StoreError> {
    parsed.map_err(|e| StoreError::Config(format!("demo seed constant is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_constants_are_valid() {
        for &(id, name, price) in GIFTS {
            assert!(ResourceId::parse(id).is_ok());
            assert!(Name::parse(name).is_ok());
            assert!(GiftPrice::parse(price).is_ok());
        }
        for &(id, coins, cents) in PACKAGES {
            assert!(ResourceId::parse(id).is_ok());
            assert!(Coins::parse(coins).is_ok());
            assert!(Money::parse("USD", cents).is_ok());
        }
    }
}
