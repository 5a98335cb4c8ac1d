//! Domain values into the contract's messages, and [`PayoutError`] into the contract's
//! errors. Enums are mapped by name (`match`), never by number.

use ovation_proto::payout as pb;
use ovation_proto::reasons;
use ovation_server::ApiError;
use ovation_server::edge::{to_money, to_timestamp};
use ovation_types::{ResourceId, UnixMillis};

use crate::domain::{
    AccountKind, BalanceView, Clawback, ClawbackCause, Creator, Credit, Payout, PayoutAccount,
    PayoutDecision, PayoutRule, PayoutState, Verification,
};
use crate::operations::PayoutError;
use crate::store::LedgerSummary;

pub fn creator(c: &Creator) -> pb::Creator {
    pb::Creator {
        creator_id: c.id.to_string(),
        display_name: c.display_name.as_str().to_owned(),
        state: creator_state(c).into(),
        payout_account: c.account.as_ref().map(payout_account),
        suspension: c.suspension.as_ref().map(|s| pb::Suspension {
            actor: s.actor.as_str().to_owned(),
            reason: s.reason.as_str().to_owned(),
            suspend_time: Some(to_timestamp(s.at)),
        }),
        create_time: Some(to_timestamp(c.created_at)),
        update_time: Some(to_timestamp(c.updated_at)),
    }
}

fn creator_state(c: &Creator) -> pb::CreatorState {
    if c.is_suspended() {
        pb::CreatorState::Suspended
    } else {
        pb::CreatorState::Active
    }
}

fn payout_account(a: &PayoutAccount) -> pb::PayoutAccount {
    let review = a.verification.review();
    pb::PayoutAccount {
        account_reference: a.reference.as_str().to_owned(),
        holder_name: a.holder_name.as_str().to_owned(),
        verification_status: verification_status(&a.verification).into(),
        reviewed_by: review
            .map(|r| r.actor.as_str().to_owned())
            .unwrap_or_default(),
        review_reason: review
            .map(|r| r.reason.as_str().to_owned())
            .unwrap_or_default(),
        review_time: review.map(|r| to_timestamp(r.at)),
        set_time: Some(to_timestamp(a.set_at)),
        version: a.version,
        set_by: a.set_by.clone(),
    }
}

fn verification_status(v: &Verification) -> pb::VerificationStatus {
    match v {
        Verification::Pending => pb::VerificationStatus::Pending,
        Verification::Verified(_) => pb::VerificationStatus::Verified,
        Verification::Rejected(_) => pb::VerificationStatus::Rejected,
    }
}

pub fn credit(c: &Credit) -> pb::Credit {
    let r = &c.request;
    let id = |i: &Option<ResourceId>| i.as_ref().map(ToString::to_string).unwrap_or_default();
    pb::Credit {
        operation_id: r.operation_id.to_string(),
        creator_id: r.creator_id.to_string(),
        coins: r.coins.get(),
        creator_share_bps: r.share.get(),
        diamonds: c.diamonds,
        sender_user_id: id(&r.sender_user_id),
        stream_id: id(&r.stream_id),
        gift_id: id(&r.gift_id),
        gift_version: r.gift_version,
        create_time: Some(to_timestamp(c.created_at)),
    }
}

pub fn payout(p: &Payout) -> pb::Payout {
    pb::Payout {
        payout_id: p.id.clone(),
        creator_id: p.creator_id.to_string(),
        diamonds: p.diamonds.get(),
        amount: Some(to_money(&p.amount)),
        economy_version: p.rate.economy_version,
        payout_per_unit: Some(to_money(&p.rate.per_unit)),
        diamonds_per_payout_unit: p.rate.diamonds_per_unit.get(),
        state: payout_state(p.state).into(),
        account_reference: p.account_reference.as_str().to_owned(),
        provider_reference: p.provider_reference.clone(),
        failure_reason: p.failure_reason.clone(),
        create_time: Some(to_timestamp(p.created_at)),
        update_time: Some(to_timestamp(p.updated_at)),
        settle_time: p.settled_at.map(to_timestamp),
        send_time: p.sent_at.map(to_timestamp),
        account_version: p.account_version,
        account_set_by: p.account_set_by.clone(),
        account_verified_by: p.account_verified_by.clone(),
        review: p.review.as_ref().map(|r| pb::PayoutReview {
            decision: payout_decision(r.decision).into(),
            reviewer: r.review.actor.as_str().to_owned(),
            reason: r.review.reason.as_str().to_owned(),
            review_time: Some(to_timestamp(r.review.at)),
        }),
        cancellation: p.cancellation.as_ref().map(|c| pb::PayoutCancellation {
            actor: c.actor.as_str().to_owned(),
            reason: c.reason.as_str().to_owned(),
            cancel_time: Some(to_timestamp(c.at)),
        }),
    }
}

fn payout_decision(decision: PayoutDecision) -> pb::PayoutReviewDecision {
    match decision {
        PayoutDecision::Approve => pb::PayoutReviewDecision::Approve,
        PayoutDecision::Reject => pb::PayoutReviewDecision::Reject,
    }
}

fn payout_state(state: PayoutState) -> pb::PayoutState {
    match state {
        PayoutState::Review => pb::PayoutState::Review,
        PayoutState::Held => pb::PayoutState::Held,
        PayoutState::Paid => pb::PayoutState::Paid,
        PayoutState::Released => pb::PayoutState::Released,
    }
}

pub fn balance(id: &ResourceId, view: &BalanceView) -> pb::DiamondBalance {
    let b = &view.balance;
    pb::DiamondBalance {
        creator_id: id.to_string(),
        available_diamonds: b.available,
        held_diamonds: b.held,
        lifetime_earned_diamonds: b.lifetime_earned,
        paid_out_diamonds: b.paid_out,
        pending_diamonds: b.pending,
        debt_diamonds: b.debt,
        next_maturity_time: view.next_maturity.map(to_timestamp),
        clawed_back_diamonds: b.clawed_back,
        read_time: Some(to_timestamp(view.as_of)),
    }
}

pub fn clawback(c: &Clawback) -> pb::Clawback {
    let r = &c.request;
    pb::Clawback {
        clawback_id: r.clawback_id.as_str().to_owned(),
        operation_id: r.operation_id.to_string(),
        creator_id: c.creator_id.to_string(),
        cause: clawback_cause(r.cause).into(),
        cause_id: r.cause_id.to_string(),
        coins_requested: r.coins.get(),
        coins: c.coins,
        creator_share_bps: c.share.get(),
        diamonds: c.diamonds,
        from_pending_diamonds: c.from_pending,
        from_available_diamonds: c.from_available,
        to_debt_diamonds: c.to_debt,
        reason: r.reason.as_str().to_owned(),
        create_time: Some(to_timestamp(c.created_at)),
    }
}

fn clawback_cause(cause: ClawbackCause) -> pb::ClawbackCause {
    match cause {
        ClawbackCause::PurchaseReversal => pb::ClawbackCause::PurchaseReversal,
        ClawbackCause::GiftReversal => pb::ClawbackCause::GiftReversal,
    }
}

/// The ledger's summary as read at `as_of`.
pub fn ledger_summary(summary: &LedgerSummary, as_of: UnixMillis) -> pb::GetLedgerSummaryResponse {
    pb::GetLedgerSummaryResponse {
        kinds: summary
            .kinds
            .iter()
            .map(|&(kind, count, balance)| pb::AccountKindSummary {
                kind: account_kind(kind).into(),
                account_count: count,
                balance_diamonds: balance,
            })
            .collect(),
        total_diamonds: summary.total,
        unbalanced_entry_count: summary.unbalanced_entries,
        negative_balance_count: summary.negative_balances,
        journal_entry_count: summary.entries,
        credit_count: summary.credits,
        credited_diamonds: summary.credited_diamonds,
        as_of_time: Some(to_timestamp(as_of)),
        lifetime_mismatch_count: summary.lifetime_mismatches,
        clawback_count: summary.clawbacks,
        clawed_back_diamonds: summary.clawed_back_diamonds,
        debt_diamonds: summary.debt_diamonds,
        payouts_sent_in_debt_count: summary.payouts_sent_in_debt,
    }
}

fn account_kind(kind: AccountKind) -> pb::AccountKind {
    match kind {
        AccountKind::Creator => pb::AccountKind::Creator,
        AccountKind::CreatorHeld => pb::AccountKind::CreatorHeld,
        AccountKind::GiftIssuance => pb::AccountKind::GiftIssuance,
        AccountKind::PaidOut => pb::AccountKind::PaidOut,
        AccountKind::CreatorPending => pb::AccountKind::CreatorPending,
        AccountKind::Clawback => pb::AccountKind::Clawback,
    }
}

/// The responses that answer with the creator as a change left them.
pub trait CreatorReply {
    fn of(creator: pb::Creator) -> Self;
}

macro_rules! creator_replies {
    ($($response:ty),* $(,)?) => {$(
        impl CreatorReply for $response {
            fn of(creator: pb::Creator) -> Self {
                Self { creator: Some(creator) }
            }
        }
    )*};
}

creator_replies!(
    pb::RegisterCreatorResponse,
    pb::SetPayoutAccountResponse,
    pb::VerifyPayoutAccountResponse,
    pb::SuspendCreatorResponse,
    pb::ReinstateCreatorResponse,
);

// ---- errors ------------------------------------------------------------------------

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> Self {
        let message = e.to_string();
        match e {
            PayoutError::Store(e) => e.into(),
            PayoutError::Rule(rule) => rule_error(rule),
            PayoutError::CreatorNotFound(id) => ApiError::not_found("creator", id.into_string()),
            PayoutError::PayoutNotFound(id) => ApiError::not_found("payout", id.into_string()),
            PayoutError::CreatorExists(_) => ApiError::AlreadyExists {
                reason: reasons::payout::CREATOR_EXISTS,
                message,
            },
            PayoutError::CreditForUnknownCreator(_) => {
                ApiError::failed_precondition(reasons::payout::CREATOR_NOT_FOUND, message)
            }
            PayoutError::CreditRefused(_) => {
                ApiError::failed_precondition(reasons::payout::CREATOR_SUSPENDED, message)
            }
            PayoutError::OperationIdReused(_) => ApiError::AlreadyExists {
                reason: reasons::payout::OPERATION_ID_REUSED,
                message,
            },
            PayoutError::ConcurrentCredit => ApiError::Aborted {
                reason: reasons::payout::CONCURRENT_CREDIT,
                message,
            },
            PayoutError::CreditNotFound(_) => ApiError::NotFoundBecause {
                reason: reasons::payout::CREDIT_NOT_FOUND,
                message,
            },
            PayoutError::ClawbackIdReused(_) => ApiError::AlreadyExists {
                reason: reasons::payout::CLAWBACK_ID_REUSED,
                message,
            },
            // The clawback id is the request's idempotency key.
            PayoutError::ConcurrentClawback => ApiError::Aborted {
                reason: reasons::common::IDEMPOTENCY_KEY_IN_PROGRESS,
                message,
            },
            PayoutError::Broken(message) => ApiError::Internal(message),
        }
    }
}

impl From<PayoutError> for tonic::Status {
    fn from(e: PayoutError) -> Self {
        ApiError::from(e).into()
    }
}

fn rule_error(rule: PayoutRule) -> ApiError {
    let message = rule.to_string();
    let reason = match rule {
        PayoutRule::CreatorSuspended => reasons::payout::CREATOR_SUSPENDED,
        PayoutRule::AccountNotVerified(_) => reasons::payout::PAYOUT_ACCOUNT_NOT_VERIFIED,
        PayoutRule::NoPayoutAccount => reasons::payout::NO_PAYOUT_ACCOUNT,
        PayoutRule::AccountChanged { .. } => reasons::payout::PAYOUT_ACCOUNT_CHANGED,
        PayoutRule::OwnChange { .. } | PayoutRule::OwnAccount { .. } => {
            return ApiError::PermissionDenied(message);
        }
        PayoutRule::AccountCoolingOff { .. } => reasons::payout::PAYOUT_ACCOUNT_COOLING_OFF,
        // A quota that resets at 00:00 UTC, like the wallet's spend caps.
        PayoutRule::DailyCapExceeded { .. } => {
            return ApiError::ResourceExhausted {
                reason: reasons::payout::DAILY_PAYOUT_CAP_EXCEEDED,
                message,
            };
        }
        PayoutRule::NotInReview { .. } => reasons::payout::PAYOUT_NOT_IN_REVIEW,
        PayoutRule::AlreadySent => reasons::payout::PAYOUT_ALREADY_SENT,
        PayoutRule::AlreadySettled => reasons::payout::PAYOUT_ALREADY_SETTLED,
        PayoutRule::BelowMinimum { .. } => reasons::payout::BELOW_PAYOUT_MINIMUM,
        PayoutRule::InsufficientDiamonds { .. } => reasons::payout::INSUFFICIENT_DIAMONDS,
        PayoutRule::CreatorInDebt { .. } => reasons::payout::CREATOR_IN_DEBT,
        PayoutRule::DiamondsNotMature { .. } => reasons::payout::DIAMONDS_NOT_MATURE,
        PayoutRule::AmountTooSmall => reasons::payout::AMOUNT_TOO_SMALL,
        PayoutRule::AmountTooLarge => reasons::payout::AMOUNT_TOO_LARGE,
        PayoutRule::LifetimeLimit => reasons::payout::LIFETIME_LIMIT_REACHED,
        PayoutRule::Overflow => return ApiError::Internal(message),
    };
    ApiError::failed_precondition(reason, message)
}
