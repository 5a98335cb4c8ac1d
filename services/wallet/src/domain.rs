//! The wallet's domain: plain values and rules, no I/O. The gRPC layer parses into these
//! types; `ledger` and `purchases` apply them to the database.

use ovation_types::{Coins, CurrencyCode, ResourceId, UnixMillis};

/// Longest a hold may live.
pub const HOLD_TTL_MS_MAX: i64 = 3_600_000;
/// Shortest a hold may live.
pub const HOLD_TTL_MS_MIN: i64 = 1_000;
/// A hold's life when the request names none.
pub const HOLD_TTL_MS_DEFAULT: i64 = 300_000;
/// Most operation ids one ListDebits may name.
pub const DEBIT_IDS_MAX: usize = 500;

const DAY_MS: i64 = 86_400_000;

/// The ledger's account kinds (the contract's `AccountKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccountKind {
    User,
    Issuance,
    Promotion,
    GiftSink,
    Adjustment,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] = [
        AccountKind::User,
        AccountKind::Issuance,
        AccountKind::Promotion,
        AccountKind::GiftSink,
        AccountKind::Adjustment,
    ];

    /// The kind's name in lowercase words (`gift_sink`), as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Issuance => "issuance",
            AccountKind::Promotion => "promotion",
            AccountKind::GiftSink => "gift_sink",
            AccountKind::Adjustment => "adjustment",
        }
    }

    /// The posting account name of a system account.
    pub fn system_account(self) -> &'static str {
        match self {
            AccountKind::User => "user:",
            AccountKind::Issuance => "system:issuance",
            AccountKind::Promotion => "system:promotion",
            AccountKind::GiftSink => "system:gift_sink",
            AccountKind::Adjustment => "system:adjustment",
        }
    }

    /// The kind of a posting account name.
    pub fn of_account(account: &str) -> Option<AccountKind> {
        if account.starts_with("user:") {
            return Some(AccountKind::User);
        }
        AccountKind::ALL
            .into_iter()
            .find(|k| *k != AccountKind::User && k.system_account() == account)
    }
}

/// The posting account of a user.
pub fn user_account(user: &str) -> String {
    format!("user:{user}")
}

/// Why a journal entry was written (the contract's `TransactionReason`),
/// and which system account is the other side of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Purchase,
    PromotionBonus,
    GiftDebit,
    HoldCapture,
    GiftRefund,
    PurchaseReversal,
    DebtSettlement,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Purchase,
        Reason::PromotionBonus,
        Reason::GiftDebit,
        Reason::HoldCapture,
        Reason::GiftRefund,
        Reason::PurchaseReversal,
        Reason::DebtSettlement,
    ];

    /// The stored value (the contract's, too).
    pub fn code(self) -> i64 {
        match self {
            Reason::Purchase => 1,
            Reason::PromotionBonus => 2,
            Reason::GiftDebit => 3,
            Reason::HoldCapture => 4,
            Reason::GiftRefund => 5,
            Reason::PurchaseReversal => 6,
            Reason::DebtSettlement => 7,
        }
    }

    pub fn from_code(code: i64) -> Option<Reason> {
        Some(match code {
            1 => Reason::Purchase,
            2 => Reason::PromotionBonus,
            3 => Reason::GiftDebit,
            4 => Reason::HoldCapture,
            5 => Reason::GiftRefund,
            6 => Reason::PurchaseReversal,
            7 => Reason::DebtSettlement,
            _ => return None,
        })
    }

    /// The system account on the other side of the user's posting.
    pub fn counterparty(self) -> AccountKind {
        match self {
            Reason::Purchase => AccountKind::Issuance,
            Reason::PromotionBonus => AccountKind::Promotion,
            Reason::GiftDebit | Reason::HoldCapture | Reason::GiftRefund => AccountKind::GiftSink,
            Reason::PurchaseReversal | Reason::DebtSettlement => AccountKind::Adjustment,
        }
    }

    /// Whether the user's side of the entry is a credit (+) or a debit (−).
    pub fn credits_user(self) -> bool {
        matches!(
            self,
            Reason::Purchase | Reason::PromotionBonus | Reason::GiftRefund
        )
    }
}

/// A user's coins as the contract shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub posted: i64,
    pub held: i64,
    pub debt: i64,
}

impl Balance {
    pub fn available(&self) -> i64 {
        self.posted - self.held
    }
}

/// A set of caps in coins; `None` = no cap, `Some(0)` blocks everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub daily_spend: Option<i64>,
    pub monthly_spend: Option<i64>,
    pub daily_purchase: Option<i64>,
    pub monthly_purchase: Option<i64>,
}

impl Caps {
    fn fields(&self) -> [Option<i64>; 4] {
        [
            self.daily_spend,
            self.monthly_spend,
            self.daily_purchase,
            self.monthly_purchase,
        ]
    }

    /// True when every cap of `self` is at least as strict as in `current`: lowering or
    /// adding caps, which protects the user at once.
    pub fn no_looser_than(&self, current: &Caps) -> bool {
        self.fields()
            .into_iter()
            .zip(current.fields())
            .all(|(new, old)| match (new, old) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(o)) => n <= o,
            })
    }

    /// Each cap the stricter of the two: what applies during a cooling-off period.
    pub fn strictest(&self, other: &Caps) -> Caps {
        let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        Caps {
            daily_spend: min(self.daily_spend, other.daily_spend),
            monthly_spend: min(self.monthly_spend, other.monthly_spend),
            daily_purchase: min(self.daily_purchase, other.daily_purchase),
            monthly_purchase: min(self.monthly_purchase, other.monthly_purchase),
        }
    }
}

/// A user's spending controls: caps in force and a change waiting to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub effective: Caps,
    pub pending: Option<(Caps, UnixMillis)>,
    pub updated_by: String,
    pub updated_at: Option<UnixMillis>,
}

impl Limits {
    /// The limits as of `now`: a pending change whose time has come is in force.
    pub fn at(&self, now: UnixMillis) -> Limits {
        match self.pending {
            Some((caps, at)) if at <= now => Limits {
                effective: caps,
                pending: None,
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// The limits after a user (or guardian) asks for `caps` at `now`. Stricter caps
    /// apply at once; looser ones only after `cooling_off_ms`, and until then every cap
    /// is the stricter of old and new. A new request replaces any pending change.
    pub fn set(&self, caps: Caps, by: &str, now: UnixMillis, cooling_off_ms: i64) -> Limits {
        let current = self.at(now).effective;
        let (effective, pending) = if caps.no_looser_than(&current) {
            (caps, None)
        } else {
            (
                caps.strictest(&current),
                Some((caps, UnixMillis(now.0.saturating_add(cooling_off_ms)))),
            )
        };
        Limits {
            effective,
            pending,
            updated_by: by.to_owned(),
            updated_at: Some(now),
        }
    }
}

/// A user's spending limits as of an instant, and what they had used against them then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsStatus {
    pub user_id: ResourceId,
    /// As of `at`: a pending change whose time has come is in force.
    pub limits: Limits,
    pub spent: Usage,
    pub bought: Usage,
    pub at: UnixMillis,
}

/// An account holder's age as a trusted party verified it: the identity provider or the
/// gateway (the token claim `age_verified_adult`) or an operator — never the user's own
/// statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifiedAge {
    Adult,
    Minor,
}

/// What the wallet knows of an account holder's age.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgeStatus {
    /// A minor's account (per a verified claim, an operator, or the user's own choice at
    /// opening): it never buys or spends.
    pub minor: bool,
    /// Adulthood verified, by a token claim or an operator.
    pub adult_verified: bool,
}

impl AgeStatus {
    /// An account as its user opens it: `minor` if they say so (a restriction anyone may
    /// choose), never verified by their own word; a verified age in their token applies.
    pub fn at_opening(minor: bool, verified: Option<VerifiedAge>) -> AgeStatus {
        let opened = AgeStatus {
            minor,
            adult_verified: false,
        };
        verified.map_or(opened, |age| opened.with_verified(age))
    }

    /// As an operator sets it: marking a minor's account, or verifying an adult's.
    pub fn set_by_operator(minor: bool) -> AgeStatus {
        AgeStatus {
            minor,
            adult_verified: !minor,
        }
    }

    /// The status once a token vouches for `age`. A verified minor is a minor at once; an
    /// adult claim verifies adulthood but never lifts a minor mark (an operator does), so
    /// a token cannot undo an operator's decision.
    pub fn with_verified(self, age: VerifiedAge) -> AgeStatus {
        match age {
            VerifiedAge::Minor => AgeStatus {
                minor: true,
                adult_verified: false,
            },
            VerifiedAge::Adult => AgeStatus {
                adult_verified: true,
                ..self
            },
        }
    }
}

/// Who may buy and spend coins (the age rule, docs/economy.md), a wallet setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgeRule {
    /// Everyone but minors' accounts (the development default).
    #[default]
    MinorsRefused,
    /// Only accounts whose adulthood was verified (production).
    VerifiedAdultsOnly,
}

impl AgeRule {
    pub fn check(self, user: &str, age: AgeStatus) -> Result<(), Refusal> {
        if age.minor {
            return Err(Refusal::Minor(user.to_owned()));
        }
        if self == AgeRule::VerifiedAdultsOnly && !age.adult_verified {
            return Err(Refusal::AgeNotVerified(user.to_owned()));
        }
        Ok(())
    }
}

/// Why a spend or a purchase is refused before any coin moves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("account {0} belongs to a minor: minors can neither buy nor spend coins")]
    Minor(String),
    #[error(
        "account {0} has no verified adult age: only verified adults may buy or spend coins. \
         Sign in through an identity provider (or gateway) that sets the token claim \
         `age_verified_adult`, or have an operator verify the account (SetAccountMinor, minor=false)"
    )]
    AgeNotVerified(String),
    #[error(
        "account {user} owes {debt} coins after a reversed purchase; spending is blocked until a purchase settles it"
    )]
    InDebt { user: String, debt: i64 },
    #[error("insufficient coins: {available} available, {wanted} wanted")]
    InsufficientCoins { available: i64, wanted: i64 },
    #[error(
        "{window} spend cap of {cap} coins would be exceeded ({used} spent, {wanted} more wanted)"
    )]
    SpendCap {
        window: &'static str,
        cap: i64,
        used: i64,
        wanted: i64,
    },
    #[error(
        "{window} purchase cap of {cap} coins would be exceeded ({used} bought, {wanted} more wanted)"
    )]
    PurchaseCap {
        window: &'static str,
        cap: i64,
        used: i64,
        wanted: i64,
    },
}

/// Coins used in the current day and month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub today: i64,
    pub this_month: i64,
}

/// Checks `wanted` more coins against a daily and a monthly cap.
pub fn check_caps(
    daily: Option<i64>,
    monthly: Option<i64>,
    usage: Usage,
    wanted: i64,
    purchase: bool,
) -> Result<(), Refusal> {
    let over = |cap: Option<i64>, used: i64| cap.filter(|cap| used.saturating_add(wanted) > *cap);
    let refusal = |window, cap, used| {
        if purchase {
            Refusal::PurchaseCap {
                window,
                cap,
                used,
                wanted,
            }
        } else {
            Refusal::SpendCap {
                window,
                cap,
                used,
                wanted,
            }
        }
    };
    if let Some(cap) = over(daily, usage.today) {
        return Err(refusal("daily", cap, usage.today));
    }
    if let Some(cap) = over(monthly, usage.this_month) {
        return Err(refusal("monthly", cap, usage.this_month));
    }
    Ok(())
}

/// The UTC day containing `t`: [start, end).
pub fn day_window(t: UnixMillis) -> (UnixMillis, UnixMillis) {
    let start = t.0.div_euclid(DAY_MS) * DAY_MS;
    (UnixMillis(start), UnixMillis(start + DAY_MS))
}

/// The UTC calendar month containing `t`: [start, end).
pub fn month_window(t: UnixMillis) -> (UnixMillis, UnixMillis) {
    let days = t.0.div_euclid(DAY_MS);
    let (y, m, _) = civil_from_days(days);
    let start = days_from_civil(y, m, 1);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = days_from_civil(ny, nm, 1);
    (UnixMillis(start * DAY_MS), UnixMillis(end * DAY_MS))
}

// Howard Hinnant's civil-date algorithms (public domain), for UTC calendar months.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A promotion the catalog offers for a package right now, and how often this user has
/// already had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionOffer {
    pub id: String,
    pub version: i64,
    pub bonus_bps: i32,
    /// 0 = unlimited.
    pub per_user_cap: i32,
    pub used_by_user: i64,
}

/// The promotion a purchase gets: the largest bonus among those the user has not used up
/// (ties: the smallest id, so the choice is stable). Returns it with its bonus coins.
pub fn choose_promotion(
    package_coins: Coins,
    offers: &[PromotionOffer],
) -> Option<(PromotionOffer, i64)> {
    offers
        .iter()
        .filter(|o| o.per_user_cap == 0 || o.used_by_user < i64::from(o.per_user_cap))
        .filter_map(|o| {
            let bonus = i128::from(package_coins.get()) * i128::from(o.bonus_bps) / 10_000;
            i64::try_from(bonus)
                .ok()
                .filter(|b| *b > 0)
                .map(|b| (o.clone(), b))
        })
        .max_by(|(a, ab), (b, bb)| ab.cmp(bb).then_with(|| b.id.cmp(&a.id)))
}

/// What a purchase costs and credits, fixed when it is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchasePlan {
    pub package_id: ResourceId,
    pub package_version: i64,
    pub currency: CurrencyCode,
    pub amount_minor: i64,
    pub package_coins: Coins,
    pub bonus_coins: i64,
    pub promotion: Option<(String, i64)>,
}

impl PurchasePlan {
    /// package + bonus coins, checked.
    pub fn coins_credited(&self) -> Option<i64> {
        self.package_coins.get().checked_add(self.bonus_coins)
    }
}

/// How a completed purchase's coins meet an existing debt: (coins to settle the debt,
/// debt left). Settling is a journal entry of its own, so the history shows it.
pub fn settle_debt(debt: i64, credited: i64) -> (i64, i64) {
    let settled = debt.min(credited).max(0);
    (settled, debt - settled)
}

/// How a reversal of `credited` coins meets an `available` balance: (coins clawed back
/// now, coins that become debt). Held coins are not clawed back: they are promised.
pub fn split_reversal(credited: i64, available: i64) -> (i64, i64) {
    let clawed = credited.min(available.max(0));
    (clawed, credited - clawed)
}

/// Lifecycle of a purchase (the contract's `PurchaseState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseState {
    Pending,
    Completed,
    Declined,
    Reversed,
}

impl PurchaseState {
    pub const ALL: [PurchaseState; 4] = [
        PurchaseState::Pending,
        PurchaseState::Completed,
        PurchaseState::Declined,
        PurchaseState::Reversed,
    ];

    /// The stored value (the contract's, too).
    pub fn code(self) -> i64 {
        match self {
            PurchaseState::Pending => 1,
            PurchaseState::Completed => 2,
            PurchaseState::Declined => 3,
            PurchaseState::Reversed => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => PurchaseState::Pending,
            2 => PurchaseState::Completed,
            3 => PurchaseState::Declined,
            4 => PurchaseState::Reversed,
            _ => return None,
        })
    }
}

/// Lifecycle of a hold (the contract's `HoldState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldState {
    pub const ALL: [HoldState; 4] = [
        HoldState::Active,
        HoldState::Captured,
        HoldState::Released,
        HoldState::Expired,
    ];

    /// The stored value (the contract's, too).
    pub fn code(self) -> i64 {
        match self {
            HoldState::Active => 1,
            HoldState::Captured => 2,
            HoldState::Released => 3,
            HoldState::Expired => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => HoldState::Active,
            2 => HoldState::Captured,
            3 => HoldState::Released,
            4 => HoldState::Expired,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn age_comes_from_verified_statements_only() {
        use VerifiedAge::{Adult, Minor};
        let unverified = AgeStatus::at_opening(false, None);
        assert!(!unverified.minor && !unverified.adult_verified);
        assert!(AgeStatus::at_opening(false, Some(Adult)).adult_verified);
        assert!(
            AgeStatus::at_opening(false, Some(Minor)).minor,
            "the claim wins"
        );
        assert!(
            AgeStatus::at_opening(true, Some(Adult)).minor,
            "a chosen restriction stays"
        );
        let marked = AgeStatus::set_by_operator(true);
        assert!(
            marked.with_verified(Adult).minor,
            "only an operator lifts it"
        );
        assert_eq!(
            AgeStatus::set_by_operator(false).with_verified(Minor),
            AgeStatus {
                minor: true,
                adult_verified: false
            }
        );
        let rule = AgeRule::VerifiedAdultsOnly;
        assert_eq!(
            rule.check("u", unverified),
            Err(Refusal::AgeNotVerified("u".into()))
        );
        assert!(AgeRule::MinorsRefused.check("u", unverified).is_ok());
        assert!(rule.check("u", unverified.with_verified(Adult)).is_ok());
        for rule in [AgeRule::MinorsRefused, AgeRule::VerifiedAdultsOnly] {
            assert_eq!(
                rule.check("u", marked.with_verified(Adult)),
                Err(Refusal::Minor("u".into()))
            );
        }
    }

    #[test]
    fn stored_codes_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
        for state in PurchaseState::ALL {
            assert_eq!(PurchaseState::from_code(state.code()), Some(state));
        }
        for state in HoldState::ALL {
            assert_eq!(HoldState::from_code(state.code()), Some(state));
        }
        assert_eq!(PurchaseState::from_code(0), None);
    }

    fn offer(id: &str, bps: i32, cap: i32, used: i64) -> PromotionOffer {
        PromotionOffer {
            id: id.into(),
            version: 1,
            bonus_bps: bps,
            per_user_cap: cap,
            used_by_user: used,
        }
    }

    #[test]
    fn the_largest_unused_bonus_wins() {
        let coins = Coins::parse(1_000).unwrap();
        let offers = [
            offer("a", 1_000, 0, 0),
            offer("b", 2_000, 1, 1),
            offer("c", 1_500, 2, 1),
        ];
        let (chosen, bonus) = choose_promotion(coins, &offers).unwrap();
        assert_eq!((chosen.id.as_str(), bonus), ("c", 150));
        assert!(choose_promotion(coins, &[offer("b", 2_000, 1, 1)]).is_none());
    }

    #[test]
    fn lowering_a_cap_applies_now_and_raising_waits() {
        let now = UnixMillis(1_000);
        let limits = Limits::default().set(
            Caps {
                daily_spend: Some(100),
                ..Default::default()
            },
            "alice",
            now,
            86_400_000,
        );
        assert_eq!(
            limits.effective.daily_spend,
            Some(100),
            "adding a cap is immediate"
        );
        assert!(limits.pending.is_none());
        let raised = limits.set(
            Caps {
                daily_spend: Some(500),
                ..Default::default()
            },
            "alice",
            UnixMillis(2_000),
            86_400_000,
        );
        assert_eq!(raised.effective.daily_spend, Some(100), "raising waits");
        assert_eq!(
            raised
                .at(UnixMillis(2_000 + 86_400_000))
                .effective
                .daily_spend,
            Some(500)
        );
        let removed = limits.set(Caps::default(), "alice", UnixMillis(2_000), 10);
        assert_eq!(
            removed.effective.daily_spend,
            Some(100),
            "removing waits too"
        );
        assert_eq!(removed.at(UnixMillis(2_010)).effective.daily_spend, None);
    }

    #[test]
    fn caps_refuse_what_would_exceed_them() {
        let usage = Usage {
            today: 90,
            this_month: 900,
        };
        assert!(check_caps(Some(100), None, usage, 10, false).is_ok());
        assert!(matches!(
            check_caps(Some(100), None, usage, 11, false),
            Err(Refusal::SpendCap {
                window: "daily",
                ..
            })
        ));
        assert!(matches!(
            check_caps(None, Some(905), usage, 10, true),
            Err(Refusal::PurchaseCap {
                window: "monthly",
                ..
            })
        ));
        assert!(check_caps(Some(0), None, Usage::default(), 1, false).is_err());
    }

    #[test]
    fn months_are_calendar_months() {
        // 2026-11-25T12:00:00Z
        let t = UnixMillis(1_795_608_000_000);
        let (start, end) = month_window(t);
        assert_eq!(start, UnixMillis(1_793_491_200_000)); // 2026-11-01
        assert_eq!(end, UnixMillis(1_796_083_200_000)); // 2026-12-01
        let (start, end) = month_window(UnixMillis(1_798_675_200_000)); // 2026-12-31
        assert_eq!(start, UnixMillis(1_796_083_200_000));
        assert_eq!(end, UnixMillis(1_798_761_600_000)); // 2027-01-01
    }

    proptest! {
        #[test]
        fn civil_dates_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn windows_contain_their_instant(ms in 0i64..4_000_000_000_000) {
            let t = UnixMillis(ms);
            let (ds, de) = day_window(t);
            let (ms_, me) = month_window(t);
            prop_assert!(ds <= t && t < de);
            prop_assert!(ms_ <= t && t < me);
            prop_assert!(ms_ <= ds && de <= me);
        }

        #[test]
        fn reversals_and_settlements_conserve_coins(credited in 0i64..1_000_000, available in -10i64..1_000_000, debt in 0i64..1_000_000) {
            let (clawed, owed) = split_reversal(credited, available);
            prop_assert_eq!(clawed + owed, credited);
            prop_assert!(clawed >= 0 && owed >= 0 && clawed <= available.max(0));
            let (settled, left) = settle_debt(debt, credited);
            prop_assert_eq!(settled + left, debt);
            prop_assert!(settled <= credited);
        }

        #[test]
        fn no_looser_caps_apply_at_once(
            old in proptest::option::of(0i64..1000), new in proptest::option::of(0i64..1000)
        ) {
            let limits = Limits { effective: Caps { daily_spend: old, ..Default::default() }, ..Default::default() };
            let set = limits.set(Caps { daily_spend: new, ..Default::default() }, "u", UnixMillis(0), 100);
            // Never looser than both the old and the new cap during cooling-off.
            if let (Some(o), Some(n)) = (old, new) {
                prop_assert_eq!(set.effective.daily_spend, Some(o.min(n)));
            }
            prop_assert_eq!(set.at(UnixMillis(100)).effective.daily_spend, new);
        }
    }
}
