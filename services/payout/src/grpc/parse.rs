//! Requests into domain commands: one function per request, every bound checked and
//! every bad field reported at once (INVALID_ARGUMENT with `BadRequest` details, in the
//! order the fields are checked here). Idempotent requests give their idempotency key
//! beside the command; the caller's identity is not the request's to say, so it is
//! never parsed from it (`subject` is only what a reported `actor` is compared with).

use ovation_proto::payout as pb;
use ovation_server::ApiError;
use ovation_server::edge::time_window;
use ovation_types::{
    Bps, Coins, Diamonds, IdempotencyKey, Name, PageSize, PageToken, ResourceId, Text, Violations,
};

use crate::domain::{AccountReference, CreditRequest, Decision, PayoutState, ReviewedAccount};
use crate::operations::PageRequest;
use crate::operations::creators::{AccountChange, AccountReview, Registration, StatusChange};
use crate::operations::ledger::{CreditsQuery, EarningsQuery};
use crate::operations::payouts::{PayoutOrder, PayoutsQuery};

/// Most operation ids one ListCredits may name.
pub const LIST_CREDITS_IDS_MAX: usize = 500;

/// A parsed request, or every field it got wrong (INVALID_ARGUMENT).
pub type Parsed<T> = Result<T, ApiError>;

/// The value `build` makes, or every violation collected.
fn finish<T>(v: Violations, build: impl FnOnce() -> Option<T>) -> Parsed<T> {
    v.finish(build).map_err(ApiError::from)
}

pub fn register_creator(
    req: &pb::RegisterCreatorRequest,
) -> Parsed<(IdempotencyKey, Registration)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let name = v.check("display_name", Name::parse(&req.display_name));
    finish(v, || {
        Some((
            key?,
            Registration {
                creator_id: id?,
                display_name: name?,
            },
        ))
    })
}

pub fn get_creator(req: &pb::GetCreatorRequest) -> Parsed<ResourceId> {
    creator_id(&req.creator_id)
}

pub fn set_payout_account(
    req: &pb::SetPayoutAccountRequest,
) -> Parsed<(IdempotencyKey, AccountChange)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let reference = v.check(
        "account_reference",
        AccountReference::parse(&req.account_reference),
    );
    let holder = v.check("holder_name", Name::parse(&req.holder_name));
    finish(v, || {
        Some((
            key?,
            AccountChange {
                creator_id: id?,
                reference: reference?,
                holder_name: holder?,
            },
        ))
    })
}

/// `subject`: the caller's, which a reported `actor` is noted against.
pub fn verify_payout_account(
    req: &pb::VerifyPayoutAccountRequest,
    subject: &str,
) -> Parsed<(IdempotencyKey, AccountReview)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let decision = v.check("decision", decision(req.decision));
    let reference = if req.account_reference.is_empty() {
        Some(None)
    } else {
        v.check(
            "account_reference",
            AccountReference::parse(&req.account_reference),
        )
        .map(Some)
    };
    if req.account_version < 1 {
        v.add(
            "account_version",
            "is required: the payout account version you reviewed (GetCreator shows it)",
        );
    }
    let reason = v.noted_reason(Text::parse_required(&req.reason), &req.actor, subject);
    finish(v, || {
        Some((
            key?,
            AccountReview {
                creator_id: id?,
                decision: decision?,
                reviewed: ReviewedAccount {
                    version: req.account_version,
                    reference: reference?,
                },
                reason: reason?,
            },
        ))
    })
}

/// `subject`: the caller's, which a reported `actor` is noted against.
pub fn suspend_creator(
    req: &pb::SuspendCreatorRequest,
    subject: &str,
) -> Parsed<(IdempotencyKey, StatusChange)> {
    status_change(
        &req.idempotency_key,
        &req.creator_id,
        &req.actor,
        &req.reason,
        subject,
    )
}

/// `subject`: the caller's, which a reported `actor` is noted against.
pub fn reinstate_creator(
    req: &pb::ReinstateCreatorRequest,
    subject: &str,
) -> Parsed<(IdempotencyKey, StatusChange)> {
    status_change(
        &req.idempotency_key,
        &req.creator_id,
        &req.actor,
        &req.reason,
        subject,
    )
}

pub fn credit_diamonds(req: &pb::CreditDiamondsRequest) -> Parsed<(IdempotencyKey, CreditRequest)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let operation = v.check("operation_id", ResourceId::parse(&req.operation_id));
    let creator = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let coins = v.check("coins", Coins::parse(req.coins));
    let share = v.check("creator_share_bps", Bps::parse(req.creator_share_bps));
    let sender = v.check("sender_user_id", optional_id(&req.sender_user_id));
    let stream = v.check("stream_id", optional_id(&req.stream_id));
    let gift = v.check("gift_id", optional_id(&req.gift_id));
    if req.gift_version < 0 {
        v.add("gift_version", "must not be negative");
    }
    finish(v, || {
        Some((
            key?,
            CreditRequest {
                operation_id: operation?,
                creator_id: creator?,
                coins: coins?,
                share: share?,
                sender_user_id: sender?,
                stream_id: stream?,
                gift_id: gift?,
                gift_version: req.gift_version,
            },
        ))
    })
}

pub fn get_diamond_balance(req: &pb::GetDiamondBalanceRequest) -> Parsed<ResourceId> {
    creator_id(&req.creator_id)
}

pub fn list_earnings(req: &pb::ListEarningsRequest) -> Parsed<EarningsQuery> {
    let mut v = Violations::default();
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let stream = v.check("stream_id", optional_id(&req.stream_id));
    let page = page(&mut v, req.page_size, &req.page_token);
    finish(v, || {
        Some(EarningsQuery {
            creator_id: id?,
            stream_id: stream?,
            page: page?,
        })
    })
}

pub fn request_payout(req: &pb::RequestPayoutRequest) -> Parsed<(IdempotencyKey, PayoutOrder)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let diamonds = v.check("diamonds", Diamonds::parse(req.diamonds));
    finish(v, || {
        Some((
            key?,
            PayoutOrder {
                creator_id: id?,
                diamonds: diamonds?,
            },
        ))
    })
}

pub fn get_payout(req: &pb::GetPayoutRequest) -> Parsed<ResourceId> {
    let mut v = Violations::default();
    let id = v.check("payout_id", ResourceId::parse(&req.payout_id));
    finish(v, || id)
}

pub fn list_payouts(req: &pb::ListPayoutsRequest) -> Parsed<PayoutsQuery> {
    let mut v = Violations::default();
    let creator = v.check("creator_id", optional_id(&req.creator_id));
    let state = v.check("state", state_filter(req.state));
    let page = page(&mut v, req.page_size, &req.page_token);
    finish(v, || {
        Some(PayoutsQuery {
            creator_id: creator?,
            state: state?,
            page: page?,
        })
    })
}

/// Either named operations (nothing else set) or a page of a time window.
pub fn list_credits(req: &pb::ListCreditsRequest) -> Parsed<CreditsQuery> {
    let mut v = Violations::default();
    let ids = operation_ids(&mut v, &req.operation_ids);
    if !req.operation_ids.is_empty() {
        if req.page_size != 0 {
            v.add("page_size", "must be unset when operation_ids are given");
        }
        if !req.page_token.is_empty() {
            v.add("page_token", "must be unset when operation_ids are given");
        }
        if req.start_time.is_some() || req.end_time.is_some() {
            v.add("start_time", "must be unset when operation_ids are given");
        }
    }
    let page = page(&mut v, req.page_size, &req.page_token);
    let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
    finish(v, || {
        let (ids, page, window) = (ids?, page?, window?);
        Some(if ids.is_empty() {
            CreditsQuery::Window { window, page }
        } else {
            CreditsQuery::ByOperation(ids)
        })
    })
}

// ---- fields ------------------------------------------------------------------------

fn idempotency_key(v: &mut Violations, raw: &str) -> Option<IdempotencyKey> {
    v.check("idempotency_key", IdempotencyKey::parse(raw))
}

fn creator_id(raw: &str) -> Parsed<ResourceId> {
    let mut v = Violations::default();
    let id = v.check("creator_id", ResourceId::parse(raw));
    finish(v, || id)
}

fn optional_id(raw: &str) -> Result<Option<ResourceId>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        ResourceId::parse(raw).map(Some)
    }
}

/// `page_size` and `page_token` (a keyset cursor this service issued).
fn page(v: &mut Violations, size: i32, token: &str) -> Option<PageRequest> {
    let size = v.check("page_size", PageSize::parse(size));
    let after = v.check(
        "page_token",
        PageToken::parse(token).and_then(|t| t.keyset()),
    );
    Some(PageRequest {
        size: size?,
        after: after?,
    })
}

fn operation_ids(v: &mut Violations, raw: &[String]) -> Option<Vec<ResourceId>> {
    if raw.len() > LIST_CREDITS_IDS_MAX {
        v.add(
            "operation_ids",
            format!("at most {LIST_CREDITS_IDS_MAX} ids"),
        );
        return None;
    }
    let parsed: Vec<Option<ResourceId>> = raw
        .iter()
        .enumerate()
        .map(|(i, id)| v.check(&format!("operation_ids[{i}]"), ResourceId::parse(id)))
        .collect();
    parsed.into_iter().collect()
}

/// What an operator's decision on a creator carries (SuspendCreator, ReinstateCreator):
/// its idempotency key, the creator, and the reason with any reported actor as a note.
fn status_change(
    idempotency_key: &str,
    creator_id: &str,
    actor: &str,
    reason: &str,
    subject: &str,
) -> Parsed<(IdempotencyKey, StatusChange)> {
    let mut v = Violations::default();
    let key = v.check("idempotency_key", IdempotencyKey::parse(idempotency_key));
    let id = v.check("creator_id", ResourceId::parse(creator_id));
    let reason = v.noted_reason(Text::parse_required(reason), actor, subject);
    finish(v, || {
        Some((
            key?,
            StatusChange {
                creator_id: id?,
                reason: reason?,
            },
        ))
    })
}

// ---- enums -------------------------------------------------------------------------

fn decision(raw: i32) -> Result<Decision, String> {
    match pb::VerificationStatus::try_from(raw) {
        Ok(pb::VerificationStatus::Verified) => Ok(Decision::Verify),
        Ok(pb::VerificationStatus::Rejected) => Ok(Decision::Reject),
        _ => Err("must be VERIFICATION_STATUS_VERIFIED or VERIFICATION_STATUS_REJECTED".into()),
    }
}

fn state_filter(raw: i32) -> Result<Option<PayoutState>, String> {
    match pb::PayoutState::try_from(raw) {
        Ok(pb::PayoutState::Unspecified) => Ok(None),
        Ok(pb::PayoutState::Held) => Ok(Some(PayoutState::Held)),
        Ok(pb::PayoutState::Paid) => Ok(Some(PayoutState::Paid)),
        Ok(pb::PayoutState::Released) => Ok(Some(PayoutState::Released)),
        // Never stored (see PayoutState): a filter on them matches nothing, honestly.
        Ok(pb::PayoutState::Requested | pb::PayoutState::Failed) => Err(
            "REQUESTED and FAILED are never at rest (a payout is HELD, PAID or RELEASED)".into(),
        ),
        Err(_) => Err(format!("{raw} is not a payout state")),
    }
}
