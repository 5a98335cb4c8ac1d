//! The wallet's domain: plain values and rules, no I/O. The gRPC layer parses into these
//! types; `ledger` and `purchases` apply them to the database.

use std::collections::HashMap;

use ovation_types::{Coins, CurrencyCode, ResourceId, Text, UnixMillis};

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
    #[error("velocity limit {}: {detail}; nothing was recorded", limit.name())]
    Velocity {
        limit: VelocityLimit,
        detail: String,
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

// ---- a batch of debits ----------------------------------------------------------------

/// What a debit asks for besides its operation id: what a repeat of the id must ask
/// again to be answered with the debit it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebitTerms {
    pub user_id: ResourceId,
    pub coins: Coins,
    pub saga_id: Option<ResourceId>,
    pub note: Text,
}

/// How an operation id was used before a batch (debits, holds and refunds share one
/// namespace of operation ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PriorUse {
    /// A debit with these terms; `from_hold` if a captured hold made it, which a plain
    /// debit never repeats.
    Debit { terms: DebitTerms, from_hold: bool },
    /// A hold or a refund.
    HoldOrRefund,
}

/// A spender as a batch finds it, read under the row lock: the account, its spend caps
/// in force and (only when a cap is in force) what was spent against them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spender {
    pub age: AgeStatus,
    pub balance: Balance,
    /// Entries in the user's history so far; the next one is `entry_count + 1`.
    pub entry_count: i64,
    pub daily_cap: Option<i64>,
    pub monthly_cap: Option<i64>,
    /// Spent today and this month; read only when a cap is in force (otherwise zero and
    /// never looked at).
    pub spent: Usage,
}

/// What becomes of one item of a batch of debits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebitPlan {
    /// Post it: the user's balance and history position right after it.
    Post {
        posted_after: i64,
        available_after: i64,
        user_seq: i64,
    },
    /// Its operation id's stored debit, asked for again: answer that debit.
    Stored,
    /// A repeat of the earlier item at this index of the batch, which is posted: answer
    /// what that one posts.
    SameAs(usize),
    /// Not applied.
    Refused(DebitRefusal),
}

/// Why an item of a batch of debits is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebitRefusal {
    /// The user has no account.
    NoAccount,
    /// The spend rules refuse it (age, debt, caps, coins).
    Refused(Refusal),
    /// Its operation id made a debit with other terms.
    OtherTerms,
    /// Its operation id is a hold's or a refund's.
    TakenByHoldOrRefund,
}

/// Plans a batch of debits, in request order, each against the state the items before it
/// leave: exactly what DebitCoins called once per item, in that order, would answer. So a
/// repeated operation id is answered like DebitCoins answers a retry: the debit an earlier
/// item posts (same terms) or ALREADY_EXISTS (other terms); an item whose earlier twin was
/// refused is planned afresh, as a retried DebitCoins after a refusal would be.
///
/// `spenders` holds the users that have an account; `prior` the operation ids of the batch
/// already used before it. Checks in the single debit's order: the operation id, the
/// account, the age rule, debt, the spend caps (counting the earlier items), the coins.
pub fn plan_debits(
    items: &[(ResourceId, DebitTerms)],
    prior: &HashMap<ResourceId, PriorUse>,
    spenders: &HashMap<ResourceId, Spender>,
    age_rule: AgeRule,
) -> Vec<DebitPlan> {
    let mut state = spenders.clone();
    // Operation id -> index of the item that posts it in this batch.
    let mut posted_here: HashMap<&ResourceId, usize> = HashMap::new();
    let mut plans = Vec::with_capacity(items.len());
    for (index, (operation_id, terms)) in items.iter().enumerate() {
        let plan = match prior.get(operation_id) {
            Some(PriorUse::Debit {
                terms: stored,
                from_hold,
            }) => {
                if !from_hold && stored == terms {
                    DebitPlan::Stored
                } else {
                    DebitPlan::Refused(DebitRefusal::OtherTerms)
                }
            }
            Some(PriorUse::HoldOrRefund) => DebitPlan::Refused(DebitRefusal::TakenByHoldOrRefund),
            None => match posted_here.get(operation_id) {
                Some(&earlier) if items[earlier].1 == *terms => DebitPlan::SameAs(earlier),
                Some(_) => DebitPlan::Refused(DebitRefusal::OtherTerms),
                None => match state.get_mut(&terms.user_id) {
                    None => DebitPlan::Refused(DebitRefusal::NoAccount),
                    Some(spender) => match spend(spender, terms, age_rule) {
                        Ok(plan) => {
                            posted_here.insert(operation_id, index);
                            plan
                        }
                        Err(refusal) => DebitPlan::Refused(DebitRefusal::Refused(refusal)),
                    },
                },
            },
        };
        plans.push(plan);
    }
    plans
}

/// One debit against a spender's running state: the single debit's rules, in its order.
fn spend(
    spender: &mut Spender,
    terms: &DebitTerms,
    age_rule: AgeRule,
) -> Result<DebitPlan, Refusal> {
    let user = terms.user_id.as_str();
    let coins = terms.coins.get();
    age_rule.check(user, spender.age)?;
    if spender.balance.debt > 0 {
        return Err(Refusal::InDebt {
            user: user.to_owned(),
            debt: spender.balance.debt,
        });
    }
    if spender.daily_cap.is_some() || spender.monthly_cap.is_some() {
        check_caps(
            spender.daily_cap,
            spender.monthly_cap,
            spender.spent,
            coins,
            false,
        )?;
    }
    let available = spender.balance.available();
    let insufficient = Refusal::InsufficientCoins {
        available,
        wanted: coins,
    };
    if available < coins {
        return Err(insufficient);
    }
    let (Some(posted_after), Some(user_seq)) = (
        spender.balance.posted.checked_sub(coins),
        spender.entry_count.checked_add(1),
    ) else {
        return Err(insufficient);
    };
    spender.balance.posted = posted_after;
    spender.entry_count = user_seq;
    // Caps compare with saturating sums (check_caps), so saturating here is exact enough:
    // a saturated figure is over every cap.
    spender.spent.today = spender.spent.today.saturating_add(coins);
    spender.spent.this_month = spender.spent.this_month.saturating_add(coins);
    Ok(DebitPlan::Post {
        posted_after,
        available_after: spender.balance.available(),
        user_seq,
    })
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

/// Who takes the money for a purchase (the contract's `PaymentProvider`; the names are
/// `OVATION_PAYMENT_PROVIDERS`' and the stored values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentProviderKind {
    Sandbox,
    Stripe,
    AppStore,
    GooglePlay,
}

impl PaymentProviderKind {
    pub const ALL: [PaymentProviderKind; 4] = [
        PaymentProviderKind::Sandbox,
        PaymentProviderKind::Stripe,
        PaymentProviderKind::AppStore,
        PaymentProviderKind::GooglePlay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PaymentProviderKind::Sandbox => "sandbox",
            PaymentProviderKind::Stripe => "stripe",
            PaymentProviderKind::AppStore => "app_store",
            PaymentProviderKind::GooglePlay => "google_play",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// How a viewer pays for one purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentMethod {
    /// A sandbox test token.
    Sandbox { token: String },
    /// A Stripe PaymentMethod id (`pm_…`).
    StripeCard { payment_method_id: String },
    /// An App Store JWS signed transaction.
    AppStore { signed_transaction: String },
    /// A Google Play purchase.
    GooglePlay {
        product_id: String,
        purchase_token: String,
    },
}

impl PaymentMethod {
    pub fn provider(&self) -> PaymentProviderKind {
        match self {
            PaymentMethod::Sandbox { .. } => PaymentProviderKind::Sandbox,
            PaymentMethod::StripeCard { .. } => PaymentProviderKind::Stripe,
            PaymentMethod::AppStore { .. } => PaymentProviderKind::AppStore,
            PaymentMethod::GooglePlay { .. } => PaymentProviderKind::GooglePlay,
        }
    }

    /// What the purchase keeps to (re)try its charge: the sandbox token or the card's
    /// payment method id. App Store and Google Play purchases are verified, not charged,
    /// and are not built yet (refused before anything is recorded).
    pub fn charge_credential(&self) -> Option<&str> {
        match self {
            PaymentMethod::Sandbox { token } => Some(token),
            PaymentMethod::StripeCard { payment_method_id } => Some(payment_method_id),
            PaymentMethod::AppStore { .. } | PaymentMethod::GooglePlay { .. } => None,
        }
    }
}

/// What the customer must do before a pending charge can go on (3-D Secure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextAction {
    /// The provider's action type (Stripe: `use_stripe_sdk`, `redirect_to_url`).
    pub action_type: String,
    /// Stripe: the PaymentIntent's client secret.
    pub client_secret: String,
    /// For redirect actions; empty otherwise.
    pub redirect_url: String,
}

impl NextAction {
    pub fn is_empty(&self) -> bool {
        self.action_type.is_empty()
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

// ---- attributing a reversed purchase's spent coins --------------------------------------

/// Where a clawback order is (the contract's `ClawbackOrderState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClawbackOrderState {
    /// Recorded; the worker delivers it to payout.
    Pending,
    /// Payout took the diamonds back.
    Applied,
    /// Payout has no credit for the gift (it was compensated): nothing to take back.
    NoCredit,
}

impl ClawbackOrderState {
    pub const ALL: [ClawbackOrderState; 3] = [
        ClawbackOrderState::Pending,
        ClawbackOrderState::Applied,
        ClawbackOrderState::NoCredit,
    ];

    /// The stored value (the contract's, too).
    pub fn code(self) -> i64 {
        match self {
            ClawbackOrderState::Pending => 1,
            ClawbackOrderState::Applied => 2,
            ClawbackOrderState::NoCredit => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => ClawbackOrderState::Pending,
            2 => ClawbackOrderState::Applied,
            3 => ClawbackOrderState::NoCredit,
            _ => return None,
        })
    }
}

/// A debit as the attribution walk sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkedDebit {
    pub operation_id: ResourceId,
    /// Its entry's position in the buyer's ledger.
    pub seq: i64,
    pub coins: i64,
    pub refunded_coins: i64,
    /// Coins earlier reversals attributed to it.
    pub attributed_coins: i64,
    /// A gift's debit (it has a saga id): its coins minted diamonds a clawback can reach.
    pub gift: bool,
}

impl WalkedDebit {
    /// Coins of it no refund gave back and no earlier reversal took: what a reversal may
    /// still attribute to it.
    pub fn attributable(&self) -> i64 {
        (self.coins - self.refunded_coins - self.attributed_coins).max(0)
    }
}

/// Coins of one reversal attributed to one debit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributed {
    pub operation_id: ResourceId,
    pub coins: i64,
    /// A gift's debit: it gets a clawback order.
    pub gift: bool,
}

/// The attribution rule, applied to one stretch of the walk: `left` coins still to
/// attribute, `debits` in the buyer's ledger order. Each debit, in turn, takes
/// min(left, its attributable coins) until nothing is left. Returns what each debit took
/// (debits that take nothing are absent) and the coins left after.
pub fn attribute(left: i64, debits: &[WalkedDebit]) -> (Vec<Attributed>, i64) {
    let mut left = left.max(0);
    let mut taken = Vec::new();
    for debit in debits {
        if left == 0 {
            break;
        }
        let coins = left.min(debit.attributable());
        if coins == 0 {
            continue;
        }
        left -= coins;
        taken.push(Attributed {
            operation_id: debit.operation_id.clone(),
            coins,
            gift: debit.gift,
        });
    }
    (taken, left)
}

/// payout's clawback id for coins of `purchase_id` attributed to debit `operation_id`:
/// "purchase:<purchase_id>:<operation_id>" (≤ 9 + 64 + 1 + 64 = 138 characters for the
/// longest ids; the wallet's purchase ids have 36, so ≤ 110 ≤ payout's 128).
pub fn clawback_id(purchase_id: &ResourceId, operation_id: &ResourceId) -> String {
    format!("purchase:{purchase_id}:{operation_id}")
}

// ---- purchase velocity limits -----------------------------------------------------------

/// The sliding window the purchase velocity limits count over: the last hour.
pub const VELOCITY_WINDOW_MS: i64 = 3_600_000;

/// Which velocity limit refused a purchase (its name is the metric's `limit` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VelocityLimit {
    /// Purchases recorded in the last hour, in any state (declines too: card testing
    /// shows up as declines).
    PurchasesPerHour,
    /// Money of purchases in the last hour, per currency, in any state but DECLINED.
    PurchaseMoneyPerHour,
}

impl VelocityLimit {
    pub fn name(self) -> &'static str {
        match self {
            VelocityLimit::PurchasesPerHour => "purchases_per_hour",
            VelocityLimit::PurchaseMoneyPerHour => "purchase_money_per_hour",
        }
    }
}

/// One buyer's purchase velocity limits; 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurchaseVelocity {
    /// Most purchases recorded per buyer in the last hour.
    pub purchases_per_hour_max: i64,
    /// Most minor units of one currency bought per buyer in the last hour.
    pub amount_minor_per_hour_max: i64,
}

impl Default for PurchaseVelocity {
    fn default() -> Self {
        PurchaseVelocity {
            purchases_per_hour_max: 30,
            amount_minor_per_hour_max: 100_000,
        }
    }
}

/// A buyer's purchases in the window: how many (every state) and how much of the new
/// purchase's currency (every state but DECLINED).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentPurchases {
    pub count: i64,
    pub amount_minor: i64,
}

impl PurchaseVelocity {
    /// Refuses a purchase of `amount_minor` in `currency` that would take the buyer past
    /// a limit, given what they bought in the window.
    pub fn check(
        &self,
        recent: RecentPurchases,
        currency: &CurrencyCode,
        amount_minor: i64,
    ) -> Result<(), Refusal> {
        if self.purchases_per_hour_max > 0 && recent.count >= self.purchases_per_hour_max {
            return Err(Refusal::Velocity {
                limit: VelocityLimit::PurchasesPerHour,
                detail: format!(
                    "{} purchases in the last hour already; at most {} per hour",
                    recent.count, self.purchases_per_hour_max
                ),
            });
        }
        if self.amount_minor_per_hour_max > 0
            && recent.amount_minor.saturating_add(amount_minor) > self.amount_minor_per_hour_max
        {
            return Err(Refusal::Velocity {
                limit: VelocityLimit::PurchaseMoneyPerHour,
                detail: format!(
                    "{} {currency} minor units bought in the last hour; {amount_minor} more \
                     would exceed {} per hour",
                    recent.amount_minor, self.amount_minor_per_hour_max
                ),
            });
        }
        Ok(())
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

    fn rid(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    fn terms(user: &str, coins: i64, note: &str) -> DebitTerms {
        DebitTerms {
            user_id: rid(user),
            coins: Coins::parse(coins).unwrap(),
            saga_id: None,
            note: Text::parse(note).unwrap(),
        }
    }

    fn spender(posted: i64, held: i64, entry_count: i64) -> Spender {
        Spender {
            age: AgeStatus::default(),
            balance: Balance {
                posted,
                held,
                debt: 0,
            },
            entry_count,
            daily_cap: None,
            monthly_cap: None,
            spent: Usage::default(),
        }
    }

    #[test]
    fn a_batch_plans_each_item_against_what_the_earlier_ones_left() {
        let spenders = HashMap::from([
            (rid("ann"), spender(120, 20, 4)),
            (
                rid("bob"),
                Spender {
                    age: AgeStatus::set_by_operator(true),
                    ..spender(100, 0, 0)
                },
            ),
            (
                rid("cy"),
                Spender {
                    balance: Balance {
                        posted: 100,
                        held: 0,
                        debt: 5,
                    },
                    ..spender(100, 0, 0)
                },
            ),
            (
                rid("dee"),
                Spender {
                    daily_cap: Some(50),
                    spent: Usage {
                        today: 40,
                        this_month: 40,
                    },
                    ..spender(1_000, 0, 0)
                },
            ),
        ]);
        let prior = HashMap::from([
            (
                rid("s1"),
                PriorUse::Debit {
                    terms: terms("ann", 7, ""),
                    from_hold: false,
                },
            ),
            (
                rid("c1"),
                PriorUse::Debit {
                    terms: terms("ann", 7, ""),
                    from_hold: true,
                },
            ),
            (rid("h1"), PriorUse::HoldOrRefund),
        ]);
        let items = [
            (rid("op1"), terms("ann", 30, "")),
            (rid("op2"), terms("ann", 50, "")),
            (rid("op3"), terms("ann", 30, "")),
            (rid("op1"), terms("ann", 30, "")),
            (rid("op1"), terms("ann", 30, "other note")),
            (rid("s1"), terms("ann", 7, "")),
            (rid("s1"), terms("ann", 8, "")),
            (rid("c1"), terms("ann", 7, "")),
            (rid("h1"), terms("ann", 1, "")),
            (rid("x1"), terms("nobody", 1, "")),
            (rid("b1"), terms("bob", 1, "")),
            (rid("d1"), terms("cy", 1, "")),
            (rid("e1"), terms("dee", 11, "")),
            (rid("e2"), terms("dee", 10, "")),
            (rid("e3"), terms("dee", 1, "")),
            (rid("op3"), terms("ann", 20, "")),
        ];
        let plans = plan_debits(&items, &prior, &spenders, AgeRule::MinorsRefused);
        let refused = |r: Refusal| DebitPlan::Refused(DebitRefusal::Refused(r));
        let cap = |used| {
            refused(Refusal::SpendCap {
                window: "daily",
                cap: 50,
                used,
                wanted: if used == 40 { 11 } else { 1 },
            })
        };
        assert_eq!(
            plans,
            [
                DebitPlan::Post {
                    posted_after: 90,
                    available_after: 70,
                    user_seq: 5
                },
                DebitPlan::Post {
                    posted_after: 40,
                    available_after: 20,
                    user_seq: 6
                },
                refused(Refusal::InsufficientCoins {
                    available: 20,
                    wanted: 30
                }),
                DebitPlan::SameAs(0),
                DebitPlan::Refused(DebitRefusal::OtherTerms),
                DebitPlan::Stored,
                DebitPlan::Refused(DebitRefusal::OtherTerms),
                DebitPlan::Refused(DebitRefusal::OtherTerms),
                DebitPlan::Refused(DebitRefusal::TakenByHoldOrRefund),
                DebitPlan::Refused(DebitRefusal::NoAccount),
                refused(Refusal::Minor("bob".into())),
                refused(Refusal::InDebt {
                    user: "cy".into(),
                    debt: 5
                }),
                cap(40),
                DebitPlan::Post {
                    posted_after: 990,
                    available_after: 990,
                    user_seq: 1
                },
                cap(50),
                // A refused item's operation id is planned afresh when it comes again.
                DebitPlan::Post {
                    posted_after: 20,
                    available_after: 0,
                    user_seq: 7
                },
            ]
        );
    }

    const USERS: [&str; 4] = ["u0", "u1", "u2", "gone"];
    const OPS: [&str; 8] = ["o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7"];

    fn arb_spender() -> impl Strategy<Value = Spender> {
        (
            0i64..400,
            0i64..100,
            0i64..3,
            0u8..10,
            proptest::option::of(0i64..300),
            proptest::option::of(0i64..600),
            0i64..200,
            0i64..5,
        )
            .prop_map(|(posted, held, debt, age, daily, monthly, spent, count)| {
                Spender {
                    age: AgeStatus {
                        minor: age == 0,
                        adult_verified: age > 4,
                    },
                    balance: Balance {
                        posted,
                        held: held.min(posted),
                        // Mostly debt-free, so most items get as far as the coins.
                        debt: if debt == 2 { 10 } else { 0 },
                    },
                    entry_count: count,
                    daily_cap: daily,
                    monthly_cap: monthly,
                    spent: Usage {
                        today: spent,
                        this_month: spent * 2,
                    },
                }
            })
    }

    fn arb_item() -> impl Strategy<Value = (ResourceId, DebitTerms)> {
        (0..OPS.len(), 0..USERS.len(), 1i64..150, 0u8..2).prop_map(|(op, user, coins, note)| {
            (
                rid(OPS[op]),
                terms(USERS[user], coins, if note == 0 { "" } else { "rose" }),
            )
        })
    }

    fn arb_prior() -> impl Strategy<Value = HashMap<ResourceId, PriorUse>> {
        proptest::collection::vec((0..OPS.len(), 0u8..3, arb_item()), 0..3).prop_map(|uses| {
            uses.into_iter()
                .map(|(op, kind, (_, terms))| {
                    let used = match kind {
                        0 => PriorUse::HoldOrRefund,
                        k => PriorUse::Debit {
                            terms,
                            from_hold: k == 2,
                        },
                    };
                    (rid(OPS[op]), used)
                })
                .collect()
        })
    }

    proptest! {
        /// A batch answers every item as DebitCoins called once per item, in order, would.
        #[test]
        fn a_batch_plans_as_single_debits_in_order_would(
            spenders in proptest::collection::vec(arb_spender(), 3),
            prior in arb_prior(),
            items in proptest::collection::vec(arb_item(), 1..40),
            verified_only in proptest::bool::ANY,
        ) {
            let rule = if verified_only { AgeRule::VerifiedAdultsOnly } else { AgeRule::MinorsRefused };
            // "gone" has no account.
            let spenders: HashMap<ResourceId, Spender> =
                spenders.into_iter().enumerate().map(|(i, s)| (rid(USERS[i]), s)).collect();
            let batch = plan_debits(&items, &prior, &spenders, rule);
            prop_assert_eq!(batch.len(), items.len());

            let (mut state, mut used) = (spenders.clone(), prior.clone());
            for (i, item) in items.iter().enumerate() {
                let single = plan_debits(std::slice::from_ref(item), &used, &state, rule);
                prop_assert_eq!(single.len(), 1);
                let single = single[0].clone();
                if let DebitPlan::Post { posted_after, user_seq, .. } = single {
                    let s = state.get_mut(&item.1.user_id).unwrap();
                    s.balance.posted = posted_after;
                    s.entry_count = user_seq;
                    s.spent.today += item.1.coins.get();
                    s.spent.this_month += item.1.coins.get();
                    used.insert(item.0.clone(), PriorUse::Debit { terms: item.1.clone(), from_hold: false });
                }
                let expected = match (&batch[i], &single) {
                    // A repeat of an item posted earlier in the batch is, one call later,
                    // a repeat of a stored debit.
                    (DebitPlan::SameAs(j), DebitPlan::Stored) => {
                        prop_assert!(*j < i && items[*j] == *item);
                        let earlier_posted = matches!(batch[*j], DebitPlan::Post { .. });
                        prop_assert!(earlier_posted, "item {} repeats an item not posted", i);
                        batch[i].clone()
                    }
                    _ => single,
                };
                prop_assert_eq!(&batch[i], &expected, "item {}", i);
            }
        }

        /// Whatever the batch, no spender goes below its held coins (I2) and each one's
        /// posted items take the next places of its history, in request order.
        #[test]
        fn a_batch_never_overdraws_and_numbers_each_history_contiguously(
            spenders in proptest::collection::vec(arb_spender(), 3),
            items in proptest::collection::vec(arb_item(), 1..60),
        ) {
            let spenders: HashMap<ResourceId, Spender> =
                spenders.into_iter().enumerate().map(|(i, s)| (rid(USERS[i]), s)).collect();
            let plans = plan_debits(&items, &HashMap::new(), &spenders, AgeRule::MinorsRefused);
            for (user, start) in &spenders {
                let mut expected_seq = start.entry_count;
                let mut posted = start.balance.posted;
                for (item, plan) in items.iter().zip(&plans) {
                    if item.1.user_id != *user {
                        continue;
                    }
                    if let DebitPlan::Post { posted_after, available_after, user_seq } = *plan {
                        expected_seq += 1;
                        posted -= item.1.coins.get();
                        prop_assert_eq!(user_seq, expected_seq);
                        prop_assert_eq!(posted_after, posted);
                        prop_assert_eq!(available_after, posted - start.balance.held);
                        prop_assert!(available_after >= 0);
                    }
                }
            }
        }
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

    fn walked(id: &str, coins: i64, refunded: i64, attributed: i64, gift: bool) -> WalkedDebit {
        WalkedDebit {
            operation_id: ResourceId::parse(id).unwrap(),
            seq: 0,
            coins,
            refunded_coins: refunded,
            attributed_coins: attributed,
            gift,
        }
    }

    #[test]
    fn attribution_takes_each_debit_in_turn_until_nothing_is_left() {
        let debits = [
            walked("g1", 200, 0, 0, true),
            walked("cap", 100, 0, 0, false),
            walked("refunded", 300, 300, 0, true),
            walked("half-taken", 400, 0, 150, true),
            walked("g3", 500, 0, 0, true),
        ];
        let (taken, left) = attribute(600, &debits);
        let got: Vec<(&str, i64, bool)> = taken
            .iter()
            .map(|t| (t.operation_id.as_str(), t.coins, t.gift))
            .collect();
        assert_eq!(
            got,
            vec![
                ("g1", 200, true),
                ("cap", 100, false),
                ("half-taken", 250, true),
                ("g3", 50, true)
            ]
        );
        assert_eq!(left, 0);
        let (taken, left) = attribute(10_000, &debits);
        assert_eq!(taken.iter().map(|t| t.coins).sum::<i64>(), 1_050);
        assert_eq!(left, 10_000 - 1_050, "what no debit can take is left");
        assert_eq!(attribute(0, &debits), (vec![], 0));
    }

    #[test]
    fn clawback_ids_name_the_purchase_and_the_debit() {
        let purchase = ResourceId::parse("pur_0123").unwrap();
        let op = ResourceId::parse("saga-9").unwrap();
        assert_eq!(clawback_id(&purchase, &op), "purchase:pur_0123:saga-9");
        let longest = ResourceId::parse(&format!("pur_{}", "f".repeat(32))).unwrap();
        let op = ResourceId::parse(&"s".repeat(64)).unwrap();
        assert!(
            clawback_id(&longest, &op).len() <= 128,
            "fits payout's clawback id"
        );
    }

    #[test]
    fn velocity_limits_count_purchases_and_money_and_zero_turns_them_off() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let limits = PurchaseVelocity {
            purchases_per_hour_max: 3,
            amount_minor_per_hour_max: 2_000,
        };
        let recent = |count, amount_minor| RecentPurchases {
            count,
            amount_minor,
        };
        assert!(limits.check(recent(2, 0), &usd, 100).is_ok());
        let refused = limits.check(recent(3, 0), &usd, 100).unwrap_err();
        assert!(matches!(
            refused,
            Refusal::Velocity {
                limit: VelocityLimit::PurchasesPerHour,
                ..
            }
        ));
        assert!(
            refused.to_string().contains("purchases_per_hour"),
            "{refused}"
        );
        assert!(
            limits.check(recent(0, 1_900), &usd, 100).is_ok(),
            "up to the limit"
        );
        let refused = limits.check(recent(0, 1_901), &usd, 100).unwrap_err();
        assert!(
            refused.to_string().contains("purchase_money_per_hour"),
            "{refused}"
        );
        let off = PurchaseVelocity {
            purchases_per_hour_max: 0,
            amount_minor_per_hour_max: 0,
        };
        assert!(off.check(recent(1_000, i64::MAX), &usd, i64::MAX).is_ok());
    }

    proptest! {
        /// Whatever the debits: never more than `left` in all, never more than a debit's
        /// attributable coins, every debit before the last one reached taken whole, and
        /// what is left is what no debit could take.
        #[test]
        fn attribution_is_exact(
            left in 0i64..5_000,
            debits in proptest::collection::vec((1i64..1_000, 0i64..1_000, 0i64..1_000, any::<bool>()), 0..20),
        ) {
            let debits: Vec<WalkedDebit> = debits
                .iter()
                .enumerate()
                .map(|(i, &(coins, refunded, attributed, gift))| {
                    walked(&format!("d{i}"), coins, refunded.min(coins), attributed.min(coins), gift)
                })
                .collect();
            let (taken, left_after) = attribute(left, &debits);
            let total: i64 = taken.iter().map(|t| t.coins).sum();
            prop_assert_eq!(total + left_after, left);
            let attributable: i64 = debits.iter().map(WalkedDebit::attributable).sum();
            prop_assert_eq!(total, left.min(attributable));
            for (i, t) in taken.iter().enumerate() {
                let d = debits.iter().find(|d| d.operation_id == t.operation_id).unwrap();
                prop_assert!(t.coins > 0 && t.coins <= d.attributable());
                prop_assert_eq!(t.gift, d.gift);
                if i + 1 < taken.len() {
                    prop_assert_eq!(t.coins, d.attributable());
                }
            }
        }
    }
}
