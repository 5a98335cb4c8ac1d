//! The catalog's domain: plain Rust values and the rules that govern them, testable
//! without a network or a database. Everything here is already valid: the gRPC edge
//! parses requests into these types, and the rules below refuse invalid combinations.

use std::fmt;

use ovation_types::limits::AMOUNT_MAX;
use ovation_types::{
    Bps, Coins, Diamonds, Money, Name, Quantity, ResourceId, Text, UnixMillis, Violation,
    Violations,
};

/// Cheapest and dearest gift, in coins (docs/limits.md, "Catalog").
pub const GIFT_PRICE_COINS_MIN: i64 = 1;
pub const GIFT_PRICE_COINS_MAX: i64 = 50_000;
/// Most prices (one per currency) a coin package carries.
pub const PACKAGE_PRICES_MAX: usize = 32;
/// Largest promotion bonus: +1000 %.
pub const PROMOTION_BONUS_BPS_MAX: i32 = 100_000;
/// Most packages a promotion may name.
pub const PROMOTION_PACKAGES_MAX: usize = 64;
/// Largest per-user cap on a promotion.
pub const PROMOTION_PER_USER_CAP_MAX: i32 = 1_000_000;

/// The four kinds of catalog item kept as versions: every change writes the next version and
/// every old version stays readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Gift,
    CoinPackage,
    Promotion,
    EconomyParameters,
}

impl Item {
    /// The kind as messages name it ("coin package abc not found").
    pub fn noun(self) -> &'static str {
        match self {
            Item::Gift => "gift",
            Item::CoinPackage => "coin package",
            Item::Promotion => "promotion",
            Item::EconomyParameters => "economy parameters",
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// The economy parameters are a single series of versions, so they have no id of their
/// own: this stands for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TheEconomy;

impl fmt::Display for TheEconomy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Item::EconomyParameters.noun())
    }
}

/// One version of a versioned catalog item: what the one create and update of every kind
/// (the catalog's `operations`) needs to know about it.
pub trait Versioned: Sized {
    const ITEM: Item;
    /// What names one item of the kind.
    type Id: fmt::Display;
    /// What an admin changes; `None`/`Keep` fields stay as they are.
    type Change;

    fn id(&self) -> &Self::Id;

    fn version(&self) -> i64;

    /// The next version with `change` applied, if the result keeps the kind's rules.
    fn next_version(&self, change: Self::Change, now: UnixMillis) -> Result<Self, CatalogRule>;

    /// The first version, made by an update when there is none yet. Only kinds without a
    /// create have one (the economy parameters); the others must be created first.
    fn first_by_update(
        _change: Self::Change,
        _now: UnixMillis,
    ) -> Option<Result<Self, CatalogRule>> {
        None
    }
}

/// An admin's change to one versioned item.
#[derive(Debug)]
pub struct Update<V: Versioned> {
    pub id: V::Id,
    /// The version the admin read; `None` changes whatever version is latest.
    pub expected_version: Option<i64>,
    pub change: V::Change,
}

/// The price of one gift: 1..=50000 coins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiftPrice(i64);

impl GiftPrice {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if !(GIFT_PRICE_COINS_MIN..=GIFT_PRICE_COINS_MAX).contains(&raw) {
            return Err(format!(
                "must be between {GIFT_PRICE_COINS_MIN} and {GIFT_PRICE_COINS_MAX} coins"
            ));
        }
        Ok(GiftPrice(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// When something is available: `[from, until)`, either end open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
}

impl Window {
    /// A window whose end comes after its start.
    pub fn new(from: Option<UnixMillis>, until: Option<UnixMillis>) -> Result<Self, String> {
        if let (Some(f), Some(u)) = (from, until)
            && f >= u
        {
            return Err("the window must end after it starts".into());
        }
        Ok(Window { from, until })
    }

    pub fn contains(&self, at: UnixMillis) -> bool {
        self.from.is_none_or(|f| f <= at) && self.until.is_none_or(|u| at < u)
    }
}

/// A gift, as of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct Gift {
    pub id: ResourceId,
    pub version: i64,
    pub name: Name,
    pub coin_price: GiftPrice,
    pub asset_url: Text,
    pub enabled: bool,
    pub window: Window,
    pub created_at: UnixMillis,
}

/// What an admin gives to create a gift.
#[derive(Clone, Debug)]
pub struct NewGift {
    pub id: ResourceId,
    pub name: Name,
    pub coin_price: GiftPrice,
    pub asset_url: Text,
    pub enabled: bool,
    pub window: Window,
}

/// A change to one optional end of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Edit<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T: Copy> Edit<T> {
    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Edit::Keep => current,
            Edit::Set(v) => Some(v),
            Edit::Clear => None,
        }
    }
}

/// What an admin changes on a gift; `None`/`Keep` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct GiftChange {
    pub name: Option<Name>,
    pub coin_price: Option<GiftPrice>,
    pub asset_url: Option<Text>,
    pub enabled: Option<bool>,
    pub active_from: Edit<UnixMillis>,
    pub active_until: Edit<UnixMillis>,
}

impl Gift {
    pub fn create(new: NewGift, now: UnixMillis) -> Gift {
        Gift {
            id: new.id,
            version: 1,
            name: new.name,
            coin_price: new.coin_price,
            asset_url: new.asset_url,
            enabled: new.enabled,
            window: new.window,
            created_at: now,
        }
    }

    pub fn is_sendable(&self, at: UnixMillis) -> bool {
        self.enabled && self.window.contains(at)
    }
}

impl Versioned for Gift {
    const ITEM: Item = Item::Gift;
    type Id = ResourceId;
    type Change = GiftChange;

    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn version(&self) -> i64 {
        self.version
    }

    /// The window is checked as a whole after the change, so moving both ends at once is
    /// fine.
    fn next_version(&self, change: GiftChange, now: UnixMillis) -> Result<Gift, CatalogRule> {
        let window = Window::new(
            change.active_from.apply(self.window.from),
            change.active_until.apply(self.window.until),
        )
        .map_err(|message| CatalogRule::WindowOrder {
            end: "active_until",
            message,
        })?;
        Ok(Gift {
            id: self.id.clone(),
            version: self.version + 1,
            name: change.name.unwrap_or_else(|| self.name.clone()),
            coin_price: change.coin_price.unwrap_or(self.coin_price),
            asset_url: change.asset_url.unwrap_or_else(|| self.asset_url.clone()),
            enabled: change.enabled.unwrap_or(self.enabled),
            window,
            created_at: now,
        })
    }
}

/// A purchasable bundle of coins, as of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct CoinPackage {
    pub id: ResourceId,
    pub version: i64,
    pub name: Name,
    pub coins: Coins,
    /// One per currency, sorted by currency.
    pub prices: Prices,
    pub enabled: bool,
    pub created_at: UnixMillis,
}

/// A package's prices: 1..=32, at most one per currency, sorted by currency code.
#[derive(Clone, Debug, PartialEq)]
pub struct Prices(Vec<Money>);

impl Prices {
    pub fn new(mut prices: Vec<Money>) -> Result<Self, String> {
        if prices.is_empty() {
            return Err("at least one price is required".into());
        }
        if prices.len() > PACKAGE_PRICES_MAX {
            return Err(format!("at most {PACKAGE_PRICES_MAX} prices"));
        }
        prices.sort_by_key(|m| m.currency);
        if prices.windows(2).any(|w| w[0].currency == w[1].currency) {
            return Err("at most one price per currency".into());
        }
        Ok(Prices(prices))
    }

    pub fn as_slice(&self) -> &[Money] {
        &self.0
    }
}

#[derive(Clone, Debug)]
pub struct NewCoinPackage {
    pub id: ResourceId,
    pub name: Name,
    pub coins: Coins,
    pub prices: Prices,
    pub enabled: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CoinPackageChange {
    pub name: Option<Name>,
    pub coins: Option<Coins>,
    pub prices: Option<Prices>,
    pub enabled: Option<bool>,
}

impl CoinPackage {
    pub fn create(new: NewCoinPackage, now: UnixMillis) -> CoinPackage {
        CoinPackage {
            id: new.id,
            version: 1,
            name: new.name,
            coins: new.coins,
            prices: new.prices,
            enabled: new.enabled,
            created_at: now,
        }
    }
}

impl Versioned for CoinPackage {
    const ITEM: Item = Item::CoinPackage;
    type Id = ResourceId;
    type Change = CoinPackageChange;

    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn next_version(
        &self,
        change: CoinPackageChange,
        now: UnixMillis,
    ) -> Result<CoinPackage, CatalogRule> {
        Ok(CoinPackage {
            id: self.id.clone(),
            version: self.version + 1,
            name: change.name.unwrap_or_else(|| self.name.clone()),
            coins: change.coins.unwrap_or(self.coins),
            prices: change.prices.unwrap_or_else(|| self.prices.clone()),
            enabled: change.enabled.unwrap_or(self.enabled),
            created_at: now,
        })
    }
}

/// Bonus coins on purchases during a window, as of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    pub id: ResourceId,
    pub version: i64,
    pub name: Name,
    /// 1..=100000 basis points of the package's coins.
    pub bonus_bps: i32,
    /// Empty: every package.
    pub package_ids: Vec<ResourceId>,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
    /// 0: unlimited.
    pub per_user_cap: i32,
    pub enabled: bool,
    pub created_at: UnixMillis,
}

#[derive(Clone, Debug)]
pub struct NewPromotion {
    pub id: ResourceId,
    pub name: Name,
    pub bonus_bps: i32,
    pub package_ids: Vec<ResourceId>,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
    pub per_user_cap: i32,
    pub enabled: bool,
}

#[derive(Clone, Debug, Default)]
pub struct PromotionChange {
    pub name: Option<Name>,
    pub bonus_bps: Option<i32>,
    pub package_ids: Option<Vec<ResourceId>>,
    pub starts_at: Option<UnixMillis>,
    pub ends_at: Option<UnixMillis>,
    pub per_user_cap: Option<i32>,
    pub enabled: Option<bool>,
}

/// Parses a promotion bonus: 1..=100000 bps.
pub fn parse_bonus_bps(raw: i32) -> Result<i32, String> {
    if !(1..=PROMOTION_BONUS_BPS_MAX).contains(&raw) {
        return Err(format!(
            "must be between 1 and {PROMOTION_BONUS_BPS_MAX} basis points"
        ));
    }
    Ok(raw)
}

/// Parses a per-user cap: 0 (unlimited) ..= 1000000.
pub fn parse_per_user_cap(raw: i32) -> Result<i32, String> {
    if !(0..=PROMOTION_PER_USER_CAP_MAX).contains(&raw) {
        return Err(format!(
            "must be between 0 and {PROMOTION_PER_USER_CAP_MAX}"
        ));
    }
    Ok(raw)
}

/// Parses a promotion's package list: ≤ 64 ids, no duplicates; sorted.
pub fn parse_package_ids(raw: &[String]) -> Result<Vec<ResourceId>, String> {
    if raw.len() > PROMOTION_PACKAGES_MAX {
        return Err(format!("at most {PROMOTION_PACKAGES_MAX} packages"));
    }
    let mut ids = raw
        .iter()
        .enumerate()
        .map(|(i, id)| ResourceId::parse(id).map_err(|e| format!("[{i}] {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    let before = ids.len();
    ids.dedup();
    if ids.len() != before {
        return Err("lists a package twice".into());
    }
    Ok(ids)
}

/// A promotion must end after it starts.
fn check_promotion_window(starts_at: UnixMillis, ends_at: UnixMillis) -> Result<(), CatalogRule> {
    if starts_at >= ends_at {
        return Err(CatalogRule::WindowOrder {
            end: "ends_at",
            message: "ends_at must be after starts_at".into(),
        });
    }
    Ok(())
}

impl Promotion {
    pub fn create(new: NewPromotion, now: UnixMillis) -> Result<Promotion, CatalogRule> {
        check_promotion_window(new.starts_at, new.ends_at)?;
        Ok(Promotion {
            id: new.id,
            version: 1,
            name: new.name,
            bonus_bps: new.bonus_bps,
            package_ids: new.package_ids,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            per_user_cap: new.per_user_cap,
            enabled: new.enabled,
            created_at: now,
        })
    }

    pub fn is_active(&self, at: UnixMillis) -> bool {
        self.enabled && self.starts_at <= at && at < self.ends_at
    }

    pub fn applies_to(&self, package: &ResourceId) -> bool {
        self.package_ids.is_empty() || self.package_ids.contains(package)
    }

    /// Bonus coins on a purchase of `coins`: floor(coins × bonus_bps / 10000).
    pub fn bonus_coins(&self, coins: Coins) -> Option<i64> {
        let product = i128::from(coins.get()).checked_mul(i128::from(self.bonus_bps))?;
        i64::try_from(product / 10_000).ok()
    }
}

impl Versioned for Promotion {
    const ITEM: Item = Item::Promotion;
    type Id = ResourceId;
    type Change = PromotionChange;

    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn next_version(
        &self,
        change: PromotionChange,
        now: UnixMillis,
    ) -> Result<Promotion, CatalogRule> {
        let starts_at = change.starts_at.unwrap_or(self.starts_at);
        let ends_at = change.ends_at.unwrap_or(self.ends_at);
        check_promotion_window(starts_at, ends_at)?;
        Ok(Promotion {
            id: self.id.clone(),
            version: self.version + 1,
            name: change.name.unwrap_or_else(|| self.name.clone()),
            bonus_bps: change.bonus_bps.unwrap_or(self.bonus_bps),
            package_ids: change
                .package_ids
                .unwrap_or_else(|| self.package_ids.clone()),
            starts_at,
            ends_at,
            per_user_cap: change.per_user_cap.unwrap_or(self.per_user_cap),
            enabled: change.enabled.unwrap_or(self.enabled),
            created_at: now,
        })
    }
}

/// The numbers of the economy, as of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct EconomyParameters {
    pub version: i64,
    pub creator_share: Bps,
    pub payout_per_unit: Money,
    pub diamonds_per_payout_unit: Diamonds,
    pub payout_minimum: Diamonds,
    /// Hours a credited diamond stays pending before it can be cashed out (payout applies
    /// the current version's value to every pending credit).
    pub diamond_maturity: RuleHours,
    /// Most diamonds one creator may cash out per UTC day (payout enforces it).
    pub payout_daily_cap: DiamondLimit,
    /// Payouts of at least this many diamonds wait for an admin's review.
    pub payout_review_threshold: DiamondLimit,
    /// Hours after a payout account is set before a payout may go to it.
    pub payout_account_cooling_off: RuleHours,
    pub created_at: UnixMillis,
}

/// Most hours an economy rule may wait (maturity, cooling-off): a year.
pub const RULE_HOURS_MAX: i64 = 8_760;

/// Hours an economy rule waits (diamond maturity, payout-account cooling-off):
/// 0 (not at all) ..= a year.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHours(i64);

impl RuleHours {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if (0..=RULE_HOURS_MAX).contains(&raw) {
            Ok(RuleHours(raw))
        } else {
            Err(format!("must be between 0 and {RULE_HOURS_MAX} hours"))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A diamond amount that limits something, 0..=10^12, where 0 means no limit
/// (the daily payout cap, the review threshold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiamondLimit(i64);

impl DiamondLimit {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if (0..=AMOUNT_MAX).contains(&raw) {
            Ok(DiamondLimit(raw))
        } else {
            Err(format!(
                "must be between 0 (no limit) and {AMOUNT_MAX} diamonds"
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[derive(Clone, Debug, Default)]
pub struct EconomyChange {
    pub creator_share: Option<Bps>,
    pub payout_per_unit: Option<Money>,
    pub diamonds_per_payout_unit: Option<Diamonds>,
    pub payout_minimum: Option<Diamonds>,
    pub diamond_maturity: Option<RuleHours>,
    pub payout_daily_cap: Option<DiamondLimit>,
    pub payout_review_threshold: Option<DiamondLimit>,
    pub payout_account_cooling_off: Option<RuleHours>,
}

impl Versioned for EconomyParameters {
    const ITEM: Item = Item::EconomyParameters;
    type Id = TheEconomy;
    type Change = EconomyChange;

    fn id(&self) -> &TheEconomy {
        &TheEconomy
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn next_version(
        &self,
        change: EconomyChange,
        now: UnixMillis,
    ) -> Result<EconomyParameters, CatalogRule> {
        Ok(EconomyParameters {
            version: self.version + 1,
            creator_share: change.creator_share.unwrap_or(self.creator_share),
            payout_per_unit: change.payout_per_unit.unwrap_or(self.payout_per_unit),
            diamonds_per_payout_unit: change
                .diamonds_per_payout_unit
                .unwrap_or(self.diamonds_per_payout_unit),
            payout_minimum: change.payout_minimum.unwrap_or(self.payout_minimum),
            diamond_maturity: change.diamond_maturity.unwrap_or(self.diamond_maturity),
            payout_daily_cap: change.payout_daily_cap.unwrap_or(self.payout_daily_cap),
            payout_review_threshold: change
                .payout_review_threshold
                .unwrap_or(self.payout_review_threshold),
            payout_account_cooling_off: change
                .payout_account_cooling_off
                .unwrap_or(self.payout_account_cooling_off),
            created_at: now,
        })
    }

    /// With no economy yet (seeding turned off), the first update must set every field.
    fn first_by_update(
        change: EconomyChange,
        now: UnixMillis,
    ) -> Option<Result<EconomyParameters, CatalogRule>> {
        let mut v = Violations::default();
        let missing = "is required: there are no economy parameters yet, so the first update \
                       sets every field";
        if change.creator_share.is_none() {
            v.add("creator_share_bps", missing);
        }
        if change.payout_per_unit.is_none() {
            v.add("payout_per_unit", missing);
        }
        if change.diamonds_per_payout_unit.is_none() {
            v.add("diamonds_per_payout_unit", missing);
        }
        if change.payout_minimum.is_none() {
            v.add("payout_minimum_diamonds", missing);
        }
        let first = v.finish(|| {
            Some(EconomyParameters {
                version: 1,
                creator_share: change.creator_share?,
                payout_per_unit: change.payout_per_unit?,
                diamonds_per_payout_unit: change.diamonds_per_payout_unit?,
                payout_minimum: change.payout_minimum?,
                // Optional even in the first update: 0, cashable at once, unless set.
                diamond_maturity: change.diamond_maturity.unwrap_or_default(),
                // The payout controls too: 0 is no cap, no review, no cooling-off.
                payout_daily_cap: change.payout_daily_cap.unwrap_or_default(),
                payout_review_threshold: change.payout_review_threshold.unwrap_or_default(),
                payout_account_cooling_off: change.payout_account_cooling_off.unwrap_or_default(),
                created_at: now,
            })
        });
        Some(first.map_err(CatalogRule::Incomplete))
    }
}

/// What a gift costs and earns at send time: recorded by the gift saga.
#[derive(Clone, Debug, PartialEq)]
pub struct GiftQuote {
    pub gift: Gift,
    pub total_coins: i64,
    pub creator_share: Bps,
    pub economy_version: i64,
    pub creator_diamonds: i64,
}

impl GiftQuote {
    /// Prices `quantity` of `gift` under `economy` at `at`.
    pub fn new(
        gift: Gift,
        economy: &EconomyParameters,
        quantity: Quantity,
        at: UnixMillis,
    ) -> Result<GiftQuote, CatalogRule> {
        if !gift.enabled {
            return Err(CatalogRule::GiftNotSendable(format!(
                "gift {} is disabled",
                gift.id
            )));
        }
        if !gift.window.contains(at) {
            return Err(CatalogRule::GiftNotSendable(format!(
                "gift {} is outside its active window",
                gift.id
            )));
        }
        // 50,000 × 99 fits easily; checked anyway, as all money arithmetic is.
        let total_coins = gift
            .coin_price
            .get()
            .checked_mul(i64::from(quantity.get()))
            .ok_or(CatalogRule::Overflow)?;
        let creator_diamonds = economy
            .creator_share
            .share_of(total_coins)
            .ok_or(CatalogRule::Overflow)?;
        Ok(GiftQuote {
            gift,
            total_coins,
            creator_share: economy.creator_share,
            economy_version: economy.version,
            creator_diamonds,
        })
    }
}

/// A catalog rule a request broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogRule {
    /// A window that would end before it starts; `end` is the field naming its end.
    #[error("{message}")]
    WindowOrder { end: &'static str, message: String },
    #[error("{0}")]
    GiftNotSendable(String),
    #[error("arithmetic overflow")]
    Overflow,
    /// Fields the change must set but did not, each with why.
    #[error("the change leaves required fields unset")]
    Incomplete(Vec<Violation>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovation_types::CurrencyCode;
    use proptest::prelude::*;

    fn rose(price: i64) -> Gift {
        Gift::create(
            NewGift {
                id: ResourceId::parse("rose").unwrap(),
                name: Name::parse("Rose").unwrap(),
                coin_price: GiftPrice::parse(price).unwrap(),
                asset_url: Text::default(),
                enabled: true,
                window: Window::default(),
            },
            UnixMillis(1_000),
        )
    }

    fn economy(share_bps: i32) -> EconomyParameters {
        EconomyParameters {
            version: 1,
            creator_share: Bps::parse(share_bps).unwrap(),
            payout_per_unit: Money::parse("USD", 500).unwrap(),
            diamonds_per_payout_unit: Diamonds::parse(1000).unwrap(),
            payout_minimum: Diamonds::parse(1000).unwrap(),
            diamond_maturity: RuleHours::parse(72).unwrap(),
            payout_daily_cap: DiamondLimit::parse(100_000).unwrap(),
            payout_review_threshold: DiamondLimit::parse(20_000).unwrap(),
            payout_account_cooling_off: RuleHours::parse(48).unwrap(),
            created_at: UnixMillis(0),
        }
    }

    #[test]
    fn diamond_maturity_is_zero_to_a_year_and_kept_when_unset() {
        assert!(RuleHours::parse(0).is_ok());
        assert!(RuleHours::parse(8_760).is_ok());
        assert!(RuleHours::parse(-1).is_err());
        assert!(RuleHours::parse(8_761).is_err());
        let v1 = economy(5_000);
        let v2 = v1
            .next_version(EconomyChange::default(), UnixMillis(1))
            .unwrap();
        assert_eq!(v2.diamond_maturity.get(), 72);
        let v3 = v2
            .next_version(
                EconomyChange {
                    diamond_maturity: Some(RuleHours::parse(0).unwrap()),
                    ..EconomyChange::default()
                },
                UnixMillis(2),
            )
            .unwrap();
        assert_eq!(v3.diamond_maturity.get(), 0);
    }

    #[test]
    fn payout_controls_are_bounded_and_kept_when_unset() {
        assert!(DiamondLimit::parse(0).is_ok());
        assert!(DiamondLimit::parse(1_000_000_000_000).is_ok());
        assert!(DiamondLimit::parse(-1).is_err());
        assert!(DiamondLimit::parse(1_000_000_000_001).is_err());
        let v1 = economy(5_000);
        let v2 = v1
            .next_version(
                EconomyChange {
                    payout_review_threshold: Some(DiamondLimit::parse(0).unwrap()),
                    ..EconomyChange::default()
                },
                UnixMillis(1),
            )
            .unwrap();
        assert_eq!(
            (
                v2.payout_daily_cap.get(),
                v2.payout_review_threshold.get(),
                v2.payout_account_cooling_off.get()
            ),
            (100_000, 0, 48)
        );
    }

    #[test]
    fn gift_prices_are_bounded() {
        assert!(GiftPrice::parse(0).is_err());
        assert!(GiftPrice::parse(1).is_ok());
        assert!(GiftPrice::parse(50_000).is_ok());
        assert!(GiftPrice::parse(50_001).is_err());
    }

    #[test]
    fn an_update_makes_the_next_version_and_keeps_the_rest() {
        let v1 = rose(1);
        let v2 = v1
            .next_version(
                GiftChange {
                    coin_price: Some(GiftPrice::parse(5).unwrap()),
                    ..Default::default()
                },
                UnixMillis(2_000),
            )
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.coin_price.get(), 5);
        assert_eq!(v2.name, v1.name);
        assert_eq!(v1.coin_price.get(), 1);
    }

    #[test]
    fn windows_must_be_ordered_after_an_update() {
        let v1 = rose(1);
        let change = GiftChange {
            active_from: Edit::Set(UnixMillis(5_000)),
            active_until: Edit::Set(UnixMillis(4_000)),
            ..Default::default()
        };
        assert!(matches!(
            v1.next_version(change, UnixMillis(2_000)),
            Err(CatalogRule::WindowOrder { .. })
        ));
    }

    #[test]
    fn quotes_floor_the_creator_share() {
        let quote = GiftQuote::new(
            rose(3),
            &economy(5_000),
            Quantity::parse(3).unwrap(),
            UnixMillis(5_000),
        )
        .unwrap();
        assert_eq!(quote.total_coins, 9);
        assert_eq!(quote.creator_diamonds, 4);
    }

    #[test]
    fn disabled_or_out_of_window_gifts_cannot_be_quoted() {
        let mut gift = rose(1);
        gift.enabled = false;
        let q = Quantity::parse(1).unwrap();
        assert!(GiftQuote::new(gift, &economy(5_000), q, UnixMillis(5)).is_err());
        let mut gift = rose(1);
        gift.window = Window::new(Some(UnixMillis(10)), Some(UnixMillis(20))).unwrap();
        assert!(GiftQuote::new(gift.clone(), &economy(5_000), q, UnixMillis(20)).is_err());
        assert!(GiftQuote::new(gift, &economy(5_000), q, UnixMillis(10)).is_ok());
    }

    #[test]
    fn prices_are_one_per_currency() {
        let usd = Money::parse("USD", 139).unwrap();
        let eur = Money::parse("EUR", 129).unwrap();
        let prices = Prices::new(vec![usd, eur]).unwrap();
        assert_eq!(
            prices.as_slice()[0].currency,
            CurrencyCode::parse("EUR").unwrap()
        );
        assert!(Prices::new(vec![usd, usd]).is_err());
        assert!(Prices::new(vec![]).is_err());
    }

    proptest! {
        #[test]
        fn quotes_never_credit_more_than_spent(price in 1i64..=50_000, qty in 1i32..=99, share in 0i32..=10_000) {
            let quote = GiftQuote::new(rose(price), &economy(share), Quantity::parse(qty).unwrap(), UnixMillis(5_000)).unwrap();
            prop_assert_eq!(quote.total_coins, price * i64::from(qty));
            prop_assert!(quote.creator_diamonds <= quote.total_coins);
            prop_assert_eq!(quote.creator_diamonds, quote.total_coins * i64::from(share) / 10_000);
        }
    }
}
