//! The payout domain: creators, the double-entry diamond ledger, credits and payouts, as
//! plain Rust values and the rules that govern them, testable without a network or a
//! database. Everything here is already valid: the gRPC edge parses requests into these
//! types, and the rules below refuse invalid combinations.
//!
//! The ledger: every movement of diamonds is a [`JournalEntry`] whose postings sum to
//! zero (I1). Accounts:
//! - `creator:<id>` ([`Account::Creator`]): the creator's available diamonds, never
//!   negative (I2);
//! - `creator_held:<id>` ([`Account::CreatorHeld`]): diamonds held by payouts in flight,
//!   never negative;
//! - `system:gift_issuance` ([`Account::GiftIssuance`]): where credited diamonds come from
//!   (its balance is minus everything ever credited);
//! - `system:paid_out` ([`Account::PaidOut`]): where paid-out diamonds go.
//!
//! The four entries: credit (issuance → creator), hold (creator → held), capture (held →
//! paid out) and release (held → creator).

use std::collections::BTreeMap;

use ovation_types::limits::MONEY_MINOR_MAX;
use ovation_types::{Bps, Coins, Diamonds, Money, Name, ResourceId, Text, UnixMillis};

/// Longest payout-account reference, in characters.
pub const ACCOUNT_REFERENCE_CHARS_MAX: usize = 255;
/// Most diamonds one creator may ever earn: far beyond any real creator, and far enough
/// below `i64::MAX` that no balance arithmetic can overflow in SQL.
pub const CREATOR_LIFETIME_DIAMONDS_MAX: i64 = 1_000_000_000_000_000_000;
/// Longest provider reference or failure reason kept from a payout provider, in characters.
pub const PROVIDER_TEXT_CHARS_MAX: usize = 500;

/// An opaque payout-provider reference for where a creator is paid (a token, never raw
/// bank details): 1..=255 printable ASCII characters without spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountReference(String);

impl AccountReference {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        if raw.len() > ACCOUNT_REFERENCE_CHARS_MAX {
            return Err(format!(
                "must be at most {ACCOUNT_REFERENCE_CHARS_MAX} characters"
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("may contain only printable ASCII without spaces".into());
        }
        Ok(AccountReference(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An operator's action on a creator: who, why, when (journaled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// The authenticated caller's subject, never a name the request supplied.
    pub actor: Name,
    /// Why (1..=500 characters).
    pub reason: Text,
    pub at: UnixMillis,
}

/// Review status of a payout account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Set by the creator, not yet reviewed: payouts refused.
    Pending,
    /// Approved by an operator: payouts allowed.
    Verified(Review),
    /// Refused by an operator: payouts refused until a new account is set and verified.
    Rejected(Review),
}

impl Verification {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verification::Pending => "PENDING",
            Verification::Verified(_) => "VERIFIED",
            Verification::Rejected(_) => "REJECTED",
        }
    }

    pub fn review(&self) -> Option<&Review> {
        match self {
            Verification::Pending => None,
            Verification::Verified(r) | Verification::Rejected(r) => Some(r),
        }
    }
}

/// An operator's decision on a payout account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Verify,
    Reject,
}

/// Where a creator is paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutAccount {
    pub reference: AccountReference,
    pub holder_name: Name,
    pub verification: Verification,
    pub set_at: UnixMillis,
    /// 1 for the creator's first account, one more with every change (even back to an
    /// earlier reference): what a review names, so it approves exactly what was read.
    pub version: i64,
    /// Who set it, as authenticated: `<subject>`, or `<subject> via <gateway>`.
    pub set_by: String,
}

impl PayoutAccount {
    /// The subject of [`PayoutAccount::set_by`] (subjects are ids, without spaces, so
    /// the first word is the subject).
    pub fn set_by_subject(&self) -> &str {
        self.set_by.split(' ').next().unwrap_or_default()
    }
}

/// The account a review names: the version read (required) and, optionally, the
/// reference seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedAccount {
    pub version: i64,
    pub reference: Option<AccountReference>,
}

/// A creator who earns diamonds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creator {
    pub id: ResourceId,
    pub display_name: Name,
    /// Set while suspended.
    pub suspension: Option<Review>,
    pub account: Option<PayoutAccount>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Creator {
    /// A new creator: active, no payout account.
    pub fn register(id: ResourceId, display_name: Name, now: UnixMillis) -> Creator {
        Creator {
            id,
            display_name,
            suspension: None,
            account: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The creator with a new payout account (the next version), pending review, set by
    /// `set_by` (the authenticated caller).
    pub fn with_account(
        &self,
        reference: AccountReference,
        holder_name: Name,
        set_by: String,
        now: UnixMillis,
    ) -> Result<Creator, PayoutRule> {
        let version = self
            .account
            .as_ref()
            .map_or(0, |a| a.version)
            .checked_add(1)
            .ok_or(PayoutRule::Overflow)?;
        Ok(Creator {
            account: Some(PayoutAccount {
                reference,
                holder_name,
                verification: Verification::Pending,
                set_at: now,
                version,
                set_by,
            }),
            updated_at: now,
            ..self.clone()
        })
    }

    /// The creator after an operator reviewed the payout account. `reviewed` names the
    /// account the operator looked at: it must still be the current one. With
    /// `four_eyes` (always, unless authentication is off and nobody has an identity), the
    /// one who set the account may reject it, never verify it.
    pub fn reviewed(
        &self,
        decision: Decision,
        reviewed: &ReviewedAccount,
        review: Review,
        four_eyes: bool,
    ) -> Result<Creator, PayoutRule> {
        let account = self.account.as_ref().ok_or(PayoutRule::NoPayoutAccount)?;
        if reviewed.version != account.version
            || reviewed
                .reference
                .as_ref()
                .is_some_and(|r| r != &account.reference)
        {
            return Err(PayoutRule::AccountChanged {
                version: account.version,
            });
        }
        if four_eyes
            && decision == Decision::Verify
            && account.set_by_subject() == review.actor.as_str()
        {
            return Err(PayoutRule::OwnChange {
                set_by: account.set_by.clone(),
            });
        }
        let at = review.at;
        let verification = match decision {
            Decision::Verify => Verification::Verified(review),
            Decision::Reject => Verification::Rejected(review),
        };
        Ok(Creator {
            account: Some(PayoutAccount {
                verification,
                ..account.clone()
            }),
            updated_at: at,
            ..self.clone()
        })
    }

    /// The creator suspended; `None` if already suspended (nothing changes).
    pub fn suspended(&self, review: Review) -> Option<Creator> {
        if self.suspension.is_some() {
            return None;
        }
        let at = review.at;
        Some(Creator {
            suspension: Some(review),
            updated_at: at,
            ..self.clone()
        })
    }

    /// The creator reinstated; `None` if not suspended (nothing changes).
    pub fn reinstated(&self, now: UnixMillis) -> Option<Creator> {
        self.suspension.as_ref()?;
        Some(Creator {
            suspension: None,
            updated_at: now,
            ..self.clone()
        })
    }

    pub fn is_suspended(&self) -> bool {
        self.suspension.is_some()
    }

    /// Whether this creator may be credited now.
    pub fn check_may_receive_credit(&self) -> Result<(), PayoutRule> {
        if self.is_suspended() {
            return Err(PayoutRule::CreatorSuspended);
        }
        Ok(())
    }

    /// The verified account a payout would go to, if this creator may request one.
    pub fn payout_destination(&self) -> Result<&PayoutAccount, PayoutRule> {
        if self.is_suspended() {
            return Err(PayoutRule::CreatorSuspended);
        }
        match &self.account {
            None => Err(PayoutRule::AccountNotVerified(
                "no payout account is set".into(),
            )),
            Some(a) => match a.verification {
                Verification::Verified(_) => Ok(a),
                Verification::Pending => Err(PayoutRule::AccountNotVerified(
                    "the payout account is awaiting verification".into(),
                )),
                Verification::Rejected(_) => Err(PayoutRule::AccountNotVerified(
                    "the payout account was rejected; set a new one".into(),
                )),
            },
        }
    }
}

// ---- credits -----------------------------------------------------------------------

/// What the gift saga asks to credit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditRequest {
    pub operation_id: ResourceId,
    pub creator_id: ResourceId,
    pub coins: Coins,
    pub share: Bps,
    pub sender_user_id: Option<ResourceId>,
    pub stream_id: Option<ResourceId>,
    pub gift_id: Option<ResourceId>,
    /// 0 when not given.
    pub gift_version: i64,
}

/// Diamonds credited to a creator for one gift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    pub request: CreditRequest,
    /// `floor(coins × share / 10000)`; may be 0.
    pub diamonds: i64,
    pub created_at: UnixMillis,
}

impl Credit {
    /// Prices a credit: `floor(coins × share / 10000)`, checked.
    pub fn new(request: CreditRequest, now: UnixMillis) -> Result<Credit, PayoutRule> {
        let diamonds = request
            .share
            .share_of(request.coins.get())
            .ok_or(PayoutRule::Overflow)?;
        Ok(Credit {
            request,
            diamonds,
            created_at: now,
        })
    }

    /// True when `request` asks for exactly this credit (a retry), whatever its
    /// idempotency key.
    pub fn is_same_request(&self, request: &CreditRequest) -> bool {
        &self.request == request
    }

    /// The journal entry that posts this credit; `None` when it is worth 0 diamonds
    /// (recorded as a credit, but nothing moves).
    pub fn entry(&self) -> Option<JournalEntry> {
        (self.diamonds > 0).then(|| {
            JournalEntry::credit(
                &self.request.creator_id,
                &self.request.operation_id,
                self.diamonds,
            )
        })
    }
}

/// A creator as a batch of credits finds them, under their row lock: who they are and
/// what they have earned so far (the lifetime limit counts from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTarget {
    pub creator: Creator,
    pub lifetime_earned: i64,
}

/// Why one credit of a batch is refused (nothing of it is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreditRefusal {
    /// The creator is not registered.
    UnknownCreator,
    /// The creator may not receive credits ([`Creator::check_may_receive_credit`]).
    NotReceiving(PayoutRule),
    /// A rule of the credit itself: its price overflows, or the lifetime limit.
    Rule(PayoutRule),
    /// The operation id was credited with other parameters.
    OperationIdReused,
}

/// What becomes of one credit of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreditOutcome {
    /// A new credit, to be recorded and posted.
    New(Credit),
    /// Recorded already (before, or by an earlier item of the batch): answered with the
    /// original credit, nothing written.
    Replay(Credit),
    Refused(CreditRefusal),
}

/// Judges a batch of credits as if each were asked alone, one after the other, in the
/// batch's order: a recorded operation id answers its original credit (the same request)
/// or is refused (other parameters), whatever has happened to the creator since; an
/// unknown or suspended creator is refused; the lifetime limit counts every earlier new
/// credit of the batch. `recorded` holds the credits already recorded under the batch's
/// operation ids, `targets` the batch's registered creators (read under their locks),
/// `now` the instant of the new credits.
pub fn judge_credits(
    requests: Vec<CreditRequest>,
    recorded: Vec<Credit>,
    targets: &BTreeMap<ResourceId, CreditTarget>,
    now: UnixMillis,
) -> Vec<CreditOutcome> {
    let mut known: BTreeMap<ResourceId, Credit> = recorded
        .into_iter()
        .map(|c| (c.request.operation_id.clone(), c))
        .collect();
    let mut earned: BTreeMap<&ResourceId, i64> = targets
        .iter()
        .map(|(id, t)| (id, t.lifetime_earned))
        .collect();
    requests
        .into_iter()
        .map(|request| {
            if let Some(existing) = known.get(&request.operation_id) {
                return if existing.is_same_request(&request) {
                    CreditOutcome::Replay(existing.clone())
                } else {
                    CreditOutcome::Refused(CreditRefusal::OperationIdReused)
                };
            }
            let Some((id, target)) = targets.get_key_value(&request.creator_id) else {
                return CreditOutcome::Refused(CreditRefusal::UnknownCreator);
            };
            if let Err(rule) = target.creator.check_may_receive_credit() {
                return CreditOutcome::Refused(CreditRefusal::NotReceiving(rule));
            }
            let credit = match Credit::new(request, now) {
                Ok(credit) => credit,
                Err(rule) => return CreditOutcome::Refused(CreditRefusal::Rule(rule)),
            };
            let so_far = earned.get(id).copied().unwrap_or(0);
            let after = match so_far.checked_add(credit.diamonds) {
                Some(after) if after <= CREATOR_LIFETIME_DIAMONDS_MAX => after,
                _ => return CreditOutcome::Refused(CreditRefusal::Rule(PayoutRule::LifetimeLimit)),
            };
            earned.insert(id, after);
            known.insert(credit.request.operation_id.clone(), credit.clone());
            CreditOutcome::New(credit)
        })
        .collect()
}

/// What `credits` add to each creator's balance: the sum of their diamonds per creator
/// (creators whose credits are all worth 0 move nothing and are left out). `None` if a
/// sum overflows.
pub fn credited_per_creator(credits: &[&Credit]) -> Option<BTreeMap<ResourceId, i64>> {
    let mut sums: BTreeMap<ResourceId, i64> = BTreeMap::new();
    for credit in credits.iter().filter(|c| c.diamonds > 0) {
        let sum = sums.entry(credit.request.creator_id.clone()).or_insert(0);
        *sum = sum.checked_add(credit.diamonds)?;
    }
    Some(sums)
}

// ---- the ledger --------------------------------------------------------------------

/// An account of the diamond ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    Creator(ResourceId),
    CreatorHeld(ResourceId),
    GiftIssuance,
    PaidOut,
}

/// Kinds of ledger account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountKind {
    Creator,
    CreatorHeld,
    GiftIssuance,
    PaidOut,
}

impl AccountKind {
    pub const ALL: [AccountKind; 4] = [
        AccountKind::Creator,
        AccountKind::CreatorHeld,
        AccountKind::GiftIssuance,
        AccountKind::PaidOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Creator => "CREATOR",
            AccountKind::CreatorHeld => "CREATOR_HELD",
            AccountKind::GiftIssuance => "GIFT_ISSUANCE",
            AccountKind::PaidOut => "PAID_OUT",
        }
    }

    /// The kind's name in lowercase words (`creator_held`), as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            AccountKind::Creator => "creator",
            AccountKind::CreatorHeld => "creator_held",
            AccountKind::GiftIssuance => "gift_issuance",
            AccountKind::PaidOut => "paid_out",
        }
    }

    /// Creator accounts may never go negative (I2).
    pub fn is_creator(self) -> bool {
        matches!(self, AccountKind::Creator | AccountKind::CreatorHeld)
    }
}

impl Account {
    /// The account's id in the ledger.
    pub fn id(&self) -> String {
        match self {
            Account::Creator(c) => format!("creator:{c}"),
            Account::CreatorHeld(c) => format!("creator_held:{c}"),
            Account::GiftIssuance => "system:gift_issuance".into(),
            Account::PaidOut => "system:paid_out".into(),
        }
    }

    pub fn kind(&self) -> AccountKind {
        match self {
            Account::Creator(_) => AccountKind::Creator,
            Account::CreatorHeld(_) => AccountKind::CreatorHeld,
            Account::GiftIssuance => AccountKind::GiftIssuance,
            Account::PaidOut => AccountKind::PaidOut,
        }
    }
}

/// What a journal entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Diamonds for a gift: issuance → creator.
    Credit,
    /// A payout holds diamonds: creator → held.
    Hold,
    /// A payout was paid: held → paid out.
    Capture,
    /// A payout failed: held → creator.
    Release,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "CREDIT",
            EntryKind::Hold => "HOLD",
            EntryKind::Capture => "CAPTURE",
            EntryKind::Release => "RELEASE",
        }
    }
}

/// One line of a journal entry: `amount` diamonds into (positive) or out of (negative)
/// `account`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
}

/// One balanced movement of diamonds. Constructed only by the four constructors below,
/// each of which posts `+n` to one account and `-n` to another, so every entry balances.
/// Entry ids are derived from what caused them (`credit:<operation>`, `hold:<payout>`,
/// `settle:<payout>`), so the database's primary key refuses a second posting of the same
/// thing, and a payout can be settled (captured or released) only once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub id: String,
    pub kind: EntryKind,
    pub creator_id: ResourceId,
    /// The operation id (credits) or payout id (the rest).
    pub reference: String,
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    fn transfer(
        id: String,
        kind: EntryKind,
        creator_id: &ResourceId,
        reference: &str,
        from: Account,
        to: Account,
        amount: i64,
    ) -> JournalEntry {
        JournalEntry {
            id,
            kind,
            creator_id: creator_id.clone(),
            reference: reference.to_owned(),
            postings: vec![
                Posting {
                    account: from,
                    amount: -amount,
                },
                Posting {
                    account: to,
                    amount,
                },
            ],
        }
    }

    /// Diamonds credited for a gift (`diamonds` > 0).
    pub fn credit(creator: &ResourceId, operation: &ResourceId, diamonds: i64) -> JournalEntry {
        Self::transfer(
            format!("credit:{operation}"),
            EntryKind::Credit,
            creator,
            operation.as_str(),
            Account::GiftIssuance,
            Account::Creator(creator.clone()),
            diamonds,
        )
    }

    pub fn hold(creator: &ResourceId, payout_id: &str, diamonds: Diamonds) -> JournalEntry {
        Self::transfer(
            format!("hold:{payout_id}"),
            EntryKind::Hold,
            creator,
            payout_id,
            Account::Creator(creator.clone()),
            Account::CreatorHeld(creator.clone()),
            diamonds.get(),
        )
    }

    pub fn capture(creator: &ResourceId, payout_id: &str, diamonds: Diamonds) -> JournalEntry {
        Self::transfer(
            format!("settle:{payout_id}"),
            EntryKind::Capture,
            creator,
            payout_id,
            Account::CreatorHeld(creator.clone()),
            Account::PaidOut,
            diamonds.get(),
        )
    }

    pub fn release(creator: &ResourceId, payout_id: &str, diamonds: Diamonds) -> JournalEntry {
        Self::transfer(
            format!("settle:{payout_id}"),
            EntryKind::Release,
            creator,
            payout_id,
            Account::CreatorHeld(creator.clone()),
            Account::Creator(creator.clone()),
            diamonds.get(),
        )
    }

    /// Postings sum to zero (I1), in i128 so the check itself cannot overflow.
    pub fn is_balanced(&self) -> bool {
        self.postings
            .iter()
            .map(|p| i128::from(p.amount))
            .sum::<i128>()
            == 0
    }
}

/// A creator's diamonds. `lifetime_earned = available + held + paid_out` always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub available: i64,
    pub held: i64,
    pub lifetime_earned: i64,
    pub paid_out: i64,
}

impl Balance {
    /// The balance after `entry` (an entry of this creator), or why it cannot be posted:
    /// no creator account may go negative (I2), no sum may overflow.
    pub fn apply(&self, entry: &JournalEntry) -> Result<Balance, LedgerRule> {
        let mut next = *self;
        for posting in &entry.postings {
            match &posting.account {
                Account::Creator(c) if c == &entry.creator_id => {
                    next.available = checked_add(next.available, posting.amount)?;
                }
                Account::CreatorHeld(c) if c == &entry.creator_id => {
                    next.held = checked_add(next.held, posting.amount)?;
                }
                Account::Creator(_) | Account::CreatorHeld(_) => {
                    return Err(LedgerRule::ForeignAccount);
                }
                Account::GiftIssuance => {
                    next.lifetime_earned = checked_add(next.lifetime_earned, -posting.amount)?;
                }
                Account::PaidOut => {
                    next.paid_out = checked_add(next.paid_out, posting.amount)?;
                }
            }
        }
        if next.available < 0 {
            return Err(LedgerRule::InsufficientAvailable {
                available: self.available,
            });
        }
        if next.held < 0 {
            return Err(LedgerRule::InsufficientHeld { held: self.held });
        }
        if next.lifetime_earned > CREATOR_LIFETIME_DIAMONDS_MAX {
            return Err(LedgerRule::LifetimeLimit);
        }
        Ok(next)
    }

    /// True when `lifetime_earned = available + held + paid_out` and nothing is negative.
    pub fn is_consistent(&self) -> bool {
        self.available >= 0
            && self.held >= 0
            && self.paid_out >= 0
            && i128::from(self.lifetime_earned)
                == i128::from(self.available) + i128::from(self.held) + i128::from(self.paid_out)
    }
}

fn checked_add(a: i64, b: i64) -> Result<i64, LedgerRule> {
    a.checked_add(b).ok_or(LedgerRule::Overflow)
}

/// Why a journal entry cannot be posted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerRule {
    #[error("the entry's postings do not sum to zero")]
    Unbalanced,
    #[error("only {available} diamonds are available")]
    InsufficientAvailable { available: i64 },
    #[error("only {held} diamonds are held")]
    InsufficientHeld { held: i64 },
    #[error("the entry posts to another creator's account")]
    ForeignAccount,
    #[error("the creator's lifetime earnings limit is reached")]
    LifetimeLimit,
    #[error("arithmetic overflow")]
    Overflow,
}

/// The whole ledger in memory: the reference model the property tests run random
/// sequences against, with the same rules the database enforces (balanced entries; creator
/// accounts never negative; an entry is posted whole or not at all).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    balances: BTreeMap<Account, i64>,
    entries: usize,
}

impl Ledger {
    /// Posts `entry` atomically, or refuses it and changes nothing.
    pub fn post(&mut self, entry: &JournalEntry) -> Result<(), LedgerRule> {
        if !entry.is_balanced() {
            return Err(LedgerRule::Unbalanced);
        }
        let mut next = Vec::with_capacity(entry.postings.len());
        for posting in &entry.postings {
            let current = self.balance(&posting.account);
            let after = checked_add(current, posting.amount)?;
            if posting.account.kind().is_creator() && after < 0 {
                return Err(match posting.account {
                    Account::CreatorHeld(_) => LedgerRule::InsufficientHeld { held: current },
                    _ => LedgerRule::InsufficientAvailable { available: current },
                });
            }
            next.push((posting.account.clone(), after));
        }
        self.balances.extend(next);
        self.entries += 1;
        Ok(())
    }

    pub fn balance(&self, account: &Account) -> i64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Sum of every balance (I1: zero).
    pub fn total(&self) -> i128 {
        self.balances.values().map(|b| i128::from(*b)).sum()
    }

    /// Creator accounts with a negative balance (I2: none).
    pub fn negative_creator_accounts(&self) -> usize {
        self.balances
            .iter()
            .filter(|(a, b)| a.kind().is_creator() && **b < 0)
            .count()
    }

    pub fn entry_count(&self) -> usize {
        self.entries
    }
}

// ---- payouts -----------------------------------------------------------------------

/// The catalog's payout economy, as of one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutRate {
    pub economy_version: i64,
    /// Money paid per `diamonds_per_unit` diamonds.
    pub per_unit: Money,
    pub diamonds_per_unit: Diamonds,
    /// Fewest diamonds one payout may cash out.
    pub minimum: Diamonds,
}

impl PayoutRate {
    /// Money for `diamonds`: `floor(diamonds × per_unit / diamonds_per_unit)`, checked
    /// in i128; refused when below the minimum, zero, or beyond one operation's bound.
    pub fn amount_for(&self, diamonds: Diamonds) -> Result<Money, PayoutRule> {
        if diamonds < self.minimum {
            return Err(PayoutRule::BelowMinimum {
                minimum: self.minimum.get(),
            });
        }
        let product = i128::from(diamonds.get())
            .checked_mul(i128::from(self.per_unit.amount_minor()))
            .ok_or(PayoutRule::Overflow)?;
        let minor = product / i128::from(self.diamonds_per_unit.get());
        if minor <= 0 {
            return Err(PayoutRule::AmountTooSmall);
        }
        let minor = i64::try_from(minor)
            .ok()
            .filter(|m| *m <= MONEY_MINOR_MAX)
            .ok_or(PayoutRule::AmountTooLarge)?;
        Money::parse(self.per_unit.currency.as_str(), minor).map_err(|_| PayoutRule::AmountTooLarge)
    }
}

/// Where a payout is in its lifecycle. `REQUESTED` and `FAILED` of the contract are never
/// stored: the request holds the diamonds in the transaction that records the payout, and
/// a provider's refusal releases the hold in the transaction that records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutState {
    Held,
    Paid,
    Released,
}

impl PayoutState {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutState::Held => "HELD",
            PayoutState::Paid => "PAID",
            PayoutState::Released => "RELEASED",
        }
    }

    pub fn parse(raw: &str) -> Option<PayoutState> {
        match raw {
            "HELD" => Some(PayoutState::Held),
            "PAID" => Some(PayoutState::Paid),
            "RELEASED" => Some(PayoutState::Released),
            _ => None,
        }
    }
}

/// A cash-out of diamonds to real money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    /// Assigned here; also the provider's idempotency key.
    pub id: String,
    pub creator_id: ResourceId,
    pub diamonds: Diamonds,
    /// Fixed at request time from `rate`.
    pub amount: Money,
    pub rate: PayoutRate,
    pub state: PayoutState,
    /// The account recorded at request time.
    pub account_reference: AccountReference,
    pub provider_reference: String,
    pub failure_reason: String,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub settled_at: Option<UnixMillis>,
    /// When the worker first handed it to the provider. Before that, a suspension
    /// releases it; after, only the provider can say whether it was paid.
    pub sent_at: Option<UnixMillis>,
}

/// What the payout worker does with a HELD payout it claimed, given its creator now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// The creator is active: hand it to the provider (if not yet) and pay.
    Pay,
    /// The creator is suspended and the provider never had it: release the hold, no call.
    Release,
    /// The creator is suspended but the provider may have it (it may even be paid): ask
    /// the provider to cancel it and settle it by the answer.
    Cancel,
}

/// Why a payout stopped by a suspension was released.
pub const RELEASED_BY_SUSPENSION: &str =
    "released: the creator was suspended before the payout was sent to the provider";

/// A provider's definite answer about a payout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    Paid { provider_reference: String },
    Failed { reason: String },
}

impl Payout {
    /// A new payout of `diamonds` for `creator`, and the entry that holds them. Checks
    /// every rule against `balance` (the database re-checks the available diamonds with a
    /// conditional update, which is what stops two concurrent requests).
    pub fn request(
        id: String,
        creator: &Creator,
        balance: &Balance,
        diamonds: Diamonds,
        rate: &PayoutRate,
        now: UnixMillis,
    ) -> Result<(Payout, JournalEntry), PayoutRule> {
        let account = creator.payout_destination()?;
        let amount = rate.amount_for(diamonds)?;
        let entry = JournalEntry::hold(&creator.id, &id, diamonds);
        balance.apply(&entry).map_err(|e| match e {
            LedgerRule::InsufficientAvailable { available } => {
                PayoutRule::InsufficientDiamonds { available }
            }
            _ => PayoutRule::Overflow,
        })?;
        let payout = Payout {
            id,
            creator_id: creator.id.clone(),
            diamonds,
            amount,
            rate: rate.clone(),
            state: PayoutState::Held,
            account_reference: account.reference.clone(),
            provider_reference: String::new(),
            failure_reason: String::new(),
            created_at: now,
            updated_at: now,
            settled_at: None,
            sent_at: None,
        };
        Ok((payout, entry))
    }

    /// What to do with this HELD payout when its creator is `creator`.
    pub fn next_step(&self, creator: &Creator) -> NextStep {
        match (creator.is_suspended(), self.sent_at) {
            (false, _) => NextStep::Pay,
            (true, None) => NextStep::Release,
            (true, Some(_)) => NextStep::Cancel,
        }
    }

    /// The payout as handed to the provider at `now` (the first time counts).
    pub fn sent(&self, now: UnixMillis) -> Payout {
        Payout {
            sent_at: self.sent_at.or(Some(now)),
            ..self.clone()
        }
    }

    /// The payout released because its creator was suspended before it was sent, and
    /// the entry that releases the hold. Refused once it was sent: the provider may have
    /// paid it.
    pub fn stopped_by_suspension(
        &self,
        now: UnixMillis,
    ) -> Result<(Payout, JournalEntry), PayoutRule> {
        if self.sent_at.is_some() {
            return Err(PayoutRule::AlreadySent);
        }
        self.settle(
            Settlement::Failed {
                reason: RELEASED_BY_SUSPENSION.into(),
            },
            now,
        )
    }

    /// The payout settled by the provider's answer, and the entry that captures or
    /// releases the hold. Only a HELD payout settles.
    pub fn settle(
        &self,
        settlement: Settlement,
        now: UnixMillis,
    ) -> Result<(Payout, JournalEntry), PayoutRule> {
        if self.state != PayoutState::Held {
            return Err(PayoutRule::AlreadySettled);
        }
        let (state, entry, provider_reference, failure_reason) = match settlement {
            Settlement::Paid { provider_reference } => (
                PayoutState::Paid,
                JournalEntry::capture(&self.creator_id, &self.id, self.diamonds),
                clip(&provider_reference),
                String::new(),
            ),
            Settlement::Failed { reason } => (
                PayoutState::Released,
                JournalEntry::release(&self.creator_id, &self.id, self.diamonds),
                String::new(),
                clip(&reason),
            ),
        };
        Ok((
            Payout {
                state,
                provider_reference,
                failure_reason,
                updated_at: now,
                settled_at: Some(now),
                ..self.clone()
            },
            entry,
        ))
    }
}

/// Provider texts are kept, but bounded.
fn clip(text: &str) -> String {
    text.chars().take(PROVIDER_TEXT_CHARS_MAX).collect()
}

/// A payout rule a request broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayoutRule {
    #[error("the creator is suspended")]
    CreatorSuspended,
    #[error("{0}")]
    AccountNotVerified(String),
    #[error("the creator has no payout account to review")]
    NoPayoutAccount,
    #[error(
        "the payout account changed since the version (or account_reference) reviewed: it is \
         now version {version}; read it again with GetCreator and review that one"
    )]
    AccountChanged { version: i64 },
    #[error("the payout account was set by {set_by}: another operator must verify it (four eyes)")]
    OwnChange { set_by: String },
    #[error("a payout must be at least {minimum} diamonds (the catalog's payout minimum)")]
    BelowMinimum { minimum: i64 },
    #[error("only {available} diamonds are available")]
    InsufficientDiamonds { available: i64 },
    #[error("these diamonds are worth less than one minor unit of money at the current rate")]
    AmountTooSmall,
    #[error("the amount of money exceeds the bound of one operation")]
    AmountTooLarge,
    #[error(
        "the creator's lifetime earnings limit ({CREATOR_LIFETIME_DIAMONDS_MAX} diamonds) is reached"
    )]
    LifetimeLimit,
    #[error("the payout is already settled")]
    AlreadySettled,
    #[error("the payout was already sent to the provider; only the provider can stop it")]
    AlreadySent,
    #[error("arithmetic overflow")]
    Overflow,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovation_types::limits::AMOUNT_MAX;
    use proptest::prelude::*;

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    fn review(at: i64) -> Review {
        Review {
            actor: Name::parse("ops").unwrap(),
            reason: Text::parse("checked").unwrap(),
            at: UnixMillis(at),
        }
    }

    fn rate(per_unit: i64, diamonds_per_unit: i64, minimum: i64) -> PayoutRate {
        PayoutRate {
            economy_version: 1,
            per_unit: Money::parse("USD", per_unit).unwrap(),
            diamonds_per_unit: Diamonds::parse(diamonds_per_unit).unwrap(),
            minimum: Diamonds::parse(minimum).unwrap(),
        }
    }

    fn account(c: &Creator, reference: &str, at: i64) -> Creator {
        c.with_account(
            AccountReference::parse(reference).unwrap(),
            Name::parse("Ann A").unwrap(),
            c.id.to_string(),
            UnixMillis(at),
        )
        .unwrap()
    }

    /// Names the creator's current account version.
    fn current(c: &Creator) -> ReviewedAccount {
        ReviewedAccount {
            version: c.account.as_ref().map_or(0, |a| a.version),
            reference: None,
        }
    }

    fn verified(name: &str) -> Creator {
        let c = account(
            &Creator::register(id(name), Name::parse("Ann").unwrap(), UnixMillis(1)),
            "sandbox-ok",
            2,
        );
        c.reviewed(Decision::Verify, &current(&c), review(3), true)
            .unwrap()
    }

    #[test]
    fn account_references_are_bounded_printable_tokens() {
        assert!(AccountReference::parse("sandbox-ok").is_ok());
        assert!(AccountReference::parse("").is_err());
        assert!(AccountReference::parse("has space").is_err());
        assert!(AccountReference::parse(&"r".repeat(255)).is_ok());
        assert!(AccountReference::parse(&"r".repeat(256)).is_err());
    }

    #[test]
    fn only_a_verified_active_creator_may_cash_out() {
        let c = Creator::register(id("ann"), Name::parse("Ann").unwrap(), UnixMillis(1));
        assert!(matches!(
            c.payout_destination(),
            Err(PayoutRule::AccountNotVerified(_))
        ));
        let c = account(&c, "sandbox-ok", 2);
        assert!(matches!(
            c.payout_destination(),
            Err(PayoutRule::AccountNotVerified(_))
        ));
        let rejected = c
            .reviewed(Decision::Reject, &current(&c), review(3), true)
            .unwrap();
        assert!(rejected.payout_destination().is_err());
        let ok = c
            .reviewed(Decision::Verify, &current(&c), review(3), true)
            .unwrap();
        assert!(ok.payout_destination().is_ok());
        let suspended = ok.suspended(review(4)).unwrap();
        assert_eq!(
            suspended.payout_destination(),
            Err(PayoutRule::CreatorSuspended)
        );
        assert_eq!(
            suspended.check_may_receive_credit(),
            Err(PayoutRule::CreatorSuspended)
        );
        assert!(
            suspended.suspended(review(5)).is_none(),
            "suspending twice changes nothing"
        );
        let back = suspended.reinstated(UnixMillis(6)).unwrap();
        assert!(back.payout_destination().is_ok());
        assert!(back.reinstated(UnixMillis(7)).is_none());
        // A new account goes back to review.
        let moved = account(&back, "sandbox-fail", 8);
        assert!(moved.payout_destination().is_err());
    }

    #[test]
    fn a_review_names_the_current_account_version() {
        let c = verified("ann");
        assert_eq!(c.account.as_ref().unwrap().version, 1);
        let other = AccountReference::parse("sandbox-other").unwrap();
        assert_eq!(
            c.reviewed(
                Decision::Verify,
                &ReviewedAccount {
                    version: 1,
                    reference: Some(other)
                },
                review(9),
                true
            ),
            Err(PayoutRule::AccountChanged { version: 1 })
        );
        // Changed and changed back: the same reference, a new version.
        let again = account(&account(&c, "sandbox-b", 10), "sandbox-ok", 11);
        assert_eq!(again.account.as_ref().unwrap().version, 3);
        let stale = ReviewedAccount {
            version: 1,
            reference: Some(AccountReference::parse("sandbox-ok").unwrap()),
        };
        assert_eq!(
            again.reviewed(Decision::Verify, &stale, review(12), true),
            Err(PayoutRule::AccountChanged { version: 3 })
        );
        assert!(
            again
                .reviewed(Decision::Verify, &current(&again), review(12), true)
                .is_ok()
        );
        let none = Creator::register(id("bob"), Name::parse("Bob").unwrap(), UnixMillis(1));
        assert_eq!(
            none.reviewed(Decision::Verify, &current(&none), review(9), true),
            Err(PayoutRule::NoPayoutAccount)
        );
    }

    #[test]
    fn the_one_who_set_an_account_may_reject_it_but_not_verify_it() {
        let c = Creator::register(id("ops"), Name::parse("Ops").unwrap(), UnixMillis(1))
            .with_account(
                AccountReference::parse("sandbox-ok").unwrap(),
                Name::parse("Ops").unwrap(),
                "ops via gateway-1".into(),
                UnixMillis(2),
            )
            .unwrap();
        assert_eq!(c.account.as_ref().unwrap().set_by_subject(), "ops");
        assert_eq!(
            c.reviewed(Decision::Verify, &current(&c), review(3), true),
            Err(PayoutRule::OwnChange {
                set_by: "ops via gateway-1".into()
            })
        );
        assert!(
            c.reviewed(Decision::Reject, &current(&c), review(3), true)
                .is_ok()
        );
        let other = Review {
            actor: Name::parse("ops-2").unwrap(),
            ..review(3)
        };
        assert!(
            c.reviewed(Decision::Verify, &current(&c), other, true)
                .is_ok()
        );
        // With authentication off nobody has an identity: no four eyes to apply.
        assert!(
            c.reviewed(Decision::Verify, &current(&c), review(3), false)
                .is_ok()
        );
    }

    #[test]
    fn a_suspension_releases_what_was_not_sent_and_asks_about_the_rest() {
        let creator = verified("ann");
        let balance = Balance {
            available: 1_000,
            held: 0,
            lifetime_earned: 1_000,
            paid_out: 0,
        };
        let (payout, hold) = Payout::request(
            "p1".into(),
            &creator,
            &balance,
            Diamonds::parse(1_000).unwrap(),
            &rate(500, 1_000, 1_000),
            UnixMillis(5),
        )
        .unwrap();
        assert_eq!(payout.next_step(&creator), NextStep::Pay);
        let suspended = creator.suspended(review(6)).unwrap();
        assert_eq!(payout.next_step(&suspended), NextStep::Release);
        let (released, release) = payout.stopped_by_suspension(UnixMillis(7)).unwrap();
        assert_eq!(released.state, PayoutState::Released);
        assert_eq!(released.failure_reason, RELEASED_BY_SUSPENSION);
        let held = balance.apply(&hold).unwrap();
        assert_eq!(held.apply(&release).unwrap(), balance, "released exactly");

        let sent = payout.sent(UnixMillis(8));
        assert_eq!(sent.sent(UnixMillis(9)).sent_at, Some(UnixMillis(8)));
        assert_eq!(sent.next_step(&suspended), NextStep::Cancel);
        assert_eq!(
            sent.stopped_by_suspension(UnixMillis(9)),
            Err(PayoutRule::AlreadySent),
            "the provider may have paid it"
        );
    }

    fn gift(operation: &str, creator: &str, coins: i64) -> CreditRequest {
        CreditRequest {
            operation_id: id(operation),
            creator_id: id(creator),
            coins: Coins::parse(coins).unwrap(),
            share: Bps::parse(5_000).unwrap(),
            sender_user_id: None,
            stream_id: None,
            gift_id: None,
            gift_version: 0,
        }
    }

    fn targets(creators: &[(&str, bool, i64)]) -> BTreeMap<ResourceId, CreditTarget> {
        creators
            .iter()
            .map(|&(name, suspended, lifetime_earned)| {
                let creator =
                    Creator::register(id(name), Name::parse("Ann").unwrap(), UnixMillis(1));
                let creator = if suspended {
                    creator.suspended(review(2)).unwrap()
                } else {
                    creator
                };
                (
                    id(name),
                    CreditTarget {
                        creator,
                        lifetime_earned,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_of_credits_is_judged_item_by_item_as_if_each_came_alone() {
        let recorded = Credit::new(gift("old", "ann", 10), UnixMillis(5)).unwrap();
        let outcomes = judge_credits(
            vec![
                gift("a", "ann", 4),
                gift("old", "ann", 10),
                gift("old", "ann", 12),
                gift("b", "nobody", 4),
                gift("c", "sue", 4),
                gift("d", "ann", 1),
            ],
            vec![recorded.clone()],
            &targets(&[("ann", false, 0), ("sue", true, 0)]),
            UnixMillis(9),
        );
        assert_eq!(
            outcomes,
            vec![
                CreditOutcome::New(Credit::new(gift("a", "ann", 4), UnixMillis(9)).unwrap()),
                CreditOutcome::Replay(recorded),
                CreditOutcome::Refused(CreditRefusal::OperationIdReused),
                CreditOutcome::Refused(CreditRefusal::UnknownCreator),
                CreditOutcome::Refused(CreditRefusal::NotReceiving(PayoutRule::CreatorSuspended)),
                CreditOutcome::New(Credit::new(gift("d", "ann", 1), UnixMillis(9)).unwrap()),
            ]
        );
    }

    #[test]
    fn an_operation_id_repeated_in_a_batch_is_credited_once() {
        let outcomes = judge_credits(
            vec![
                gift("a", "ann", 4),
                gift("a", "ann", 4),
                gift("a", "ann", 6),
            ],
            Vec::new(),
            &targets(&[("ann", false, 0)]),
            UnixMillis(9),
        );
        let first = Credit::new(gift("a", "ann", 4), UnixMillis(9)).unwrap();
        assert_eq!(
            outcomes,
            vec![
                CreditOutcome::New(first.clone()),
                CreditOutcome::Replay(first),
                CreditOutcome::Refused(CreditRefusal::OperationIdReused),
            ]
        );
        // A refused item records nothing: its repeat is judged afresh.
        let outcomes = judge_credits(
            vec![gift("a", "nobody", 4), gift("a", "ann", 4)],
            Vec::new(),
            &targets(&[("ann", false, 0)]),
            UnixMillis(9),
        );
        assert_eq!(
            outcomes[0],
            CreditOutcome::Refused(CreditRefusal::UnknownCreator)
        );
        assert!(matches!(outcomes[1], CreditOutcome::New(_)));
    }

    #[test]
    fn the_lifetime_limit_counts_the_earlier_credits_of_the_batch() {
        // 2 diamonds from the limit: the first credit (2) fits, the second (1) does not;
        // another creator is unaffected.
        let near = CREATOR_LIFETIME_DIAMONDS_MAX - 2;
        let outcomes = judge_credits(
            vec![
                gift("a", "ann", 4),
                gift("b", "ann", 2),
                gift("c", "ann", 1),
                gift("d", "bob", 2),
            ],
            Vec::new(),
            &targets(&[("ann", false, near), ("bob", false, near)]),
            UnixMillis(9),
        );
        assert!(matches!(outcomes[0], CreditOutcome::New(_)));
        let limit = CreditOutcome::Refused(CreditRefusal::Rule(PayoutRule::LifetimeLimit));
        assert_eq!(outcomes[1], limit);
        // Worth 0 diamonds: recorded, nothing moves, the limit does not stop it.
        assert!(matches!(outcomes[2], CreditOutcome::New(ref c) if c.diamonds == 0));
        assert!(matches!(outcomes[3], CreditOutcome::New(_)));
    }

    #[test]
    fn credits_move_each_creator_by_their_sum() {
        let credits: Vec<Credit> = [
            ("a", "ann", 4),
            ("b", "bob", 6),
            ("c", "ann", 10),
            ("d", "cat", 1),
        ]
        .iter()
        .map(|&(op, creator, coins)| Credit::new(gift(op, creator, coins), UnixMillis(1)).unwrap())
        .collect();
        let refs: Vec<&Credit> = credits.iter().collect();
        let sums = credited_per_creator(&refs).unwrap();
        assert_eq!(
            sums.into_iter().collect::<Vec<_>>(),
            vec![(id("ann"), 7), (id("bob"), 3)],
            "cat's credit is worth 0 diamonds and moves nothing"
        );
    }

    #[test]
    fn credits_floor_the_share_and_may_be_zero() {
        let request = |coins, bps| CreditRequest {
            operation_id: id("saga-1"),
            creator_id: id("ann"),
            coins: Coins::parse(coins).unwrap(),
            share: Bps::parse(bps).unwrap(),
            sender_user_id: None,
            stream_id: None,
            gift_id: None,
            gift_version: 0,
        };
        let c = Credit::new(request(3, 5_000), UnixMillis(1)).unwrap();
        assert_eq!(c.diamonds, 1);
        assert!(c.entry().unwrap().is_balanced());
        let zero = Credit::new(request(1, 5_000), UnixMillis(1)).unwrap();
        assert_eq!(zero.diamonds, 0);
        assert!(zero.entry().is_none());
        let max = Credit::new(request(AMOUNT_MAX, 10_000), UnixMillis(1)).unwrap();
        assert_eq!(max.diamonds, AMOUNT_MAX);
        assert!(c.is_same_request(&request(3, 5_000)));
        assert!(!c.is_same_request(&request(3, 4_000)));
    }

    #[test]
    fn payout_money_is_floored_at_the_recorded_rate() {
        let r = rate(500, 1_000, 1_000);
        assert_eq!(
            r.amount_for(Diamonds::parse(1_000).unwrap())
                .unwrap()
                .amount_minor(),
            500
        );
        assert_eq!(
            r.amount_for(Diamonds::parse(1_999).unwrap())
                .unwrap()
                .amount_minor(),
            999
        );
        assert_eq!(
            r.amount_for(Diamonds::parse(999).unwrap()),
            Err(PayoutRule::BelowMinimum { minimum: 1_000 })
        );
        let tiny = rate(1, 1_000_000, 1);
        assert_eq!(
            tiny.amount_for(Diamonds::parse(999_999).unwrap()),
            Err(PayoutRule::AmountTooSmall)
        );
        let huge = rate(MONEY_MINOR_MAX, 1, 1);
        assert_eq!(
            huge.amount_for(Diamonds::parse(AMOUNT_MAX).unwrap()),
            Err(PayoutRule::AmountTooLarge)
        );
    }

    #[test]
    fn a_payout_holds_then_captures_or_releases_once() {
        let creator = verified("ann");
        let balance = Balance {
            available: 1_500,
            held: 0,
            lifetime_earned: 1_500,
            paid_out: 0,
        };
        let r = rate(500, 1_000, 1_000);
        let over = Payout::request(
            "p0".into(),
            &creator,
            &balance,
            Diamonds::parse(1_501).unwrap(),
            &r,
            UnixMillis(5),
        );
        assert_eq!(
            over.unwrap_err(),
            PayoutRule::InsufficientDiamonds { available: 1_500 }
        );
        let (payout, hold) = Payout::request(
            "p1".into(),
            &creator,
            &balance,
            Diamonds::parse(1_000).unwrap(),
            &r,
            UnixMillis(5),
        )
        .unwrap();
        let held = balance.apply(&hold).unwrap();
        assert_eq!((held.available, held.held), (500, 1_000));
        let (failed, release) = payout
            .settle(
                Settlement::Failed {
                    reason: "no".into(),
                },
                UnixMillis(6),
            )
            .unwrap();
        assert_eq!(failed.state, PayoutState::Released);
        assert_eq!(held.apply(&release).unwrap(), balance, "released exactly");
        assert_eq!(
            failed.settle(
                Settlement::Paid {
                    provider_reference: "x".into()
                },
                UnixMillis(7)
            ),
            Err(PayoutRule::AlreadySettled)
        );
        let (paid, capture) = payout
            .settle(
                Settlement::Paid {
                    provider_reference: "ref".into(),
                },
                UnixMillis(6),
            )
            .unwrap();
        assert_eq!(paid.state, PayoutState::Paid);
        assert_eq!(capture.id, release.id, "one settlement per payout");
        let after = held.apply(&capture).unwrap();
        assert_eq!(
            (after.available, after.held, after.paid_out),
            (500, 0, 1_000)
        );
        assert!(after.is_consistent());
    }

    #[test]
    fn the_ledger_refuses_unbalanced_entries_and_overdrafts_whole() {
        let mut ledger = Ledger::default();
        let ann = id("ann");
        let mut bad = JournalEntry::credit(&ann, &id("op"), 5);
        bad.postings[0].amount = -4;
        assert_eq!(ledger.post(&bad), Err(LedgerRule::Unbalanced));
        ledger
            .post(&JournalEntry::credit(&ann, &id("op"), 5))
            .unwrap();
        let hold = JournalEntry::hold(&ann, "p", Diamonds::parse(6).unwrap());
        assert!(ledger.post(&hold).is_err());
        assert_eq!(ledger.balance(&Account::Creator(ann.clone())), 5);
        assert_eq!(ledger.balance(&Account::CreatorHeld(ann)), 0);
        assert_eq!(ledger.total(), 0);
        assert_eq!(ledger.entry_count(), 1);
    }

    /// One step of a random history.
    #[derive(Clone, Debug)]
    enum Step {
        Credit {
            creator: usize,
            coins: i64,
            bps: i32,
        },
        Request {
            creator: usize,
            diamonds: i64,
        },
        Settle {
            payout: usize,
            paid: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, 1..=AMOUNT_MAX, 0..=10_000i32).prop_map(|(creator, coins, bps)| {
                Step::Credit {
                    creator,
                    coins,
                    bps,
                }
            }),
            (0..3usize, 1..=50_000i64, 0..=10_000i32).prop_map(|(creator, coins, bps)| {
                Step::Credit {
                    creator,
                    coins,
                    bps,
                }
            }),
            (0..3usize, 1..=AMOUNT_MAX)
                .prop_map(|(creator, diamonds)| Step::Request { creator, diamonds }),
            (0..3usize, 1..=20_000i64)
                .prop_map(|(creator, diamonds)| Step::Request { creator, diamonds }),
            (0..64usize, any::<bool>()).prop_map(|(payout, paid)| Step::Settle { payout, paid }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// I1 and I2 over random credit / payout / provider-outcome histories: every entry
        /// balances, the ledger sums to zero, no creator account goes negative, and each
        /// creator's balance agrees with the ledger and with itself.
        #[test]
        fn ledger_invariants_hold_over_random_histories(steps in prop::collection::vec(step(), 1..80)) {
            let creators: Vec<Creator> = ["ann", "bob", "cyd"].iter().map(|n| verified(n)).collect();
            let mut balances = vec![Balance::default(); creators.len()];
            let mut ledger = Ledger::default();
            let mut payouts: Vec<Payout> = Vec::new();
            let r = rate(500, 1_000, 1_000);
            let mut credited = vec![0i128; creators.len()];
            for (n, step) in steps.into_iter().enumerate() {
                let now = UnixMillis(1_000 + n as i64);
                match step {
                    Step::Credit { creator, coins, bps } => {
                        let credit = Credit::new(CreditRequest {
                            operation_id: id(&format!("op-{n}")),
                            creator_id: creators[creator].id.clone(),
                            coins: Coins::parse(coins).unwrap(),
                            share: Bps::parse(bps).unwrap(),
                            sender_user_id: None, stream_id: None, gift_id: None, gift_version: 0,
                        }, now).unwrap();
                        prop_assert!(credit.diamonds <= coins);
                        if let Some(entry) = credit.entry() {
                            prop_assert!(entry.is_balanced());
                            match balances[creator].apply(&entry) {
                                Ok(next) => {
                                    ledger.post(&entry).unwrap();
                                    balances[creator] = next;
                                    credited[creator] += i128::from(credit.diamonds);
                                }
                                Err(e) => prop_assert_eq!(e, LedgerRule::LifetimeLimit),
                            }
                        }
                    }
                    Step::Request { creator, diamonds } => {
                        let before = ledger.clone();
                        let result = Payout::request(
                            format!("p-{n}"), &creators[creator], &balances[creator],
                            Diamonds::parse(diamonds).unwrap(), &r, now,
                        );
                        match result {
                            Ok((payout, entry)) => {
                                prop_assert!(entry.is_balanced());
                                prop_assert!(diamonds <= balances[creator].available);
                                ledger.post(&entry).unwrap();
                                balances[creator] = balances[creator].apply(&entry).unwrap();
                                payouts.push(payout);
                            }
                            Err(PayoutRule::InsufficientDiamonds { available }) => {
                                prop_assert_eq!(available, balances[creator].available);
                                prop_assert!(diamonds > available);
                                // The ledger refuses the same hold on its own, too.
                                let hold = JournalEntry::hold(&creators[creator].id, "x", Diamonds::parse(diamonds).unwrap());
                                prop_assert!(ledger.clone().post(&hold).is_err());
                            }
                            Err(PayoutRule::BelowMinimum { .. }) => prop_assert!(diamonds < 1_000),
                            Err(e) => prop_assert!(false, "unexpected refusal {e}"),
                        }
                        prop_assert_eq!(before.total(), ledger.total());
                    }
                    Step::Settle { payout, paid } => {
                        let Some(index) = (!payouts.is_empty()).then(|| payout % payouts.len()) else { continue };
                        let settlement = if paid {
                            Settlement::Paid { provider_reference: "ref".into() }
                        } else {
                            Settlement::Failed { reason: "declined".into() }
                        };
                        match payouts[index].settle(settlement, now) {
                            Ok((settled, entry)) => {
                                let c = creators.iter().position(|c| c.id == settled.creator_id).unwrap();
                                ledger.post(&entry).unwrap();
                                balances[c] = balances[c].apply(&entry).unwrap();
                                payouts[index] = settled;
                            }
                            Err(e) => {
                                prop_assert_eq!(e, PayoutRule::AlreadySettled);
                                prop_assert!(payouts[index].state != PayoutState::Held);
                            }
                        }
                    }
                }
                // I1: the ledger sums to zero.
                prop_assert_eq!(ledger.total(), 0);
                // I2: no creator account is negative.
                prop_assert_eq!(ledger.negative_creator_accounts(), 0);
                for (c, creator) in creators.iter().enumerate() {
                    let b = balances[c];
                    prop_assert!(b.is_consistent(), "{b:?}");
                    prop_assert_eq!(b.available, ledger.balance(&Account::Creator(creator.id.clone())));
                    prop_assert_eq!(b.held, ledger.balance(&Account::CreatorHeld(creator.id.clone())));
                    prop_assert_eq!(i128::from(b.lifetime_earned), credited[c]);
                    let held: i64 = payouts.iter()
                        .filter(|p| p.creator_id == creator.id && p.state == PayoutState::Held)
                        .map(|p| p.diamonds.get()).sum();
                    prop_assert_eq!(b.held, held);
                }
                prop_assert_eq!(
                    ledger.balance(&Account::GiftIssuance),
                    -(credited.iter().sum::<i128>() as i64)
                );
            }
        }
    }
}
