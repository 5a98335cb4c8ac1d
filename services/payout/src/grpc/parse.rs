//! One `parse_*` per request: the proto request in, a domain command out, every bound
//! checked and every bad field reported at once (the edge answers INVALID_ARGUMENT with
//! `BadRequest` details, in the order the fields are checked here). Pure, so each is
//! tested without a server. Idempotent requests give their idempotency key
//! beside the command; the caller's identity is not the request's to say, so it is
//! never parsed from it (`subject` is only what a reported `actor` is compared with).

use ovation_proto::payout as pb;
use ovation_server::edge::{idempotency_key, keyed, optional_id, time_window};
use ovation_types::Parsed;
use ovation_types::{
    Bps, Coins, Diamonds, IdempotencyKey, Name, PageSize, PageToken, ResourceId, Text, Violations,
};

use crate::domain::{
    AccountReference, AccountReferences, ClawbackCause, ClawbackId, ClawbackRequest, CreditRequest,
    Decision, PayoutDecision, PayoutState, ReviewedAccount,
};
use crate::operations::PageRequest;
use crate::operations::clawbacks::ClawbacksQuery;
use crate::operations::creators::{AccountChange, AccountReview, Registration, StatusChange};
use crate::operations::ledger::{CreditsQuery, EarningsQuery};
use crate::operations::payouts::{PayoutCancel, PayoutOrder, PayoutVerdict, PayoutsQuery};

/// Most operation ids one ListCredits may name.
pub const LIST_CREDITS_IDS_MAX: usize = 500;

pub fn parse_register_creator(
    req: &pb::RegisterCreatorRequest,
) -> Parsed<(IdempotencyKey, Registration)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let name = v.check("display_name", Name::parse(&req.display_name));
    keyed(v, key, || {
        Some(Registration {
            creator_id: id?,
            display_name: name?,
        })
    })
}

pub fn parse_get_creator(req: &pb::GetCreatorRequest) -> Parsed<ResourceId> {
    creator_id(&req.creator_id)
}

/// `references`: which account references the configured payout provider can pay to.
pub fn parse_set_payout_account(
    req: &pb::SetPayoutAccountRequest,
    references: AccountReferences,
) -> Parsed<(IdempotencyKey, AccountChange)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let reference = v.check(
        "account_reference",
        references.parse(&req.account_reference),
    );
    let holder = v.check("holder_name", Name::parse(&req.holder_name));
    keyed(v, key, || {
        Some(AccountChange {
            creator_id: id?,
            reference: reference?,
            holder_name: holder?,
        })
    })
}

pub fn parse_verify_payout_account(
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
    keyed(v, key, || {
        Some(AccountReview {
            creator_id: id?,
            decision: decision?,
            reviewed: ReviewedAccount {
                version: req.account_version,
                reference: reference?,
            },
            reason: reason?,
        })
    })
}

pub fn parse_suspend_creator(
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

pub fn parse_reinstate_creator(
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

pub fn parse_credit_diamonds(
    req: &pb::CreditDiamondsRequest,
) -> Parsed<(IdempotencyKey, CreditRequest)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let credit = credit_fields(
        &mut v,
        CreditFields {
            operation_id: &req.operation_id,
            creator_id: &req.creator_id,
            coins: req.coins,
            creator_share_bps: req.creator_share_bps,
            sender_user_id: &req.sender_user_id,
            stream_id: &req.stream_id,
            gift_id: &req.gift_id,
            gift_version: req.gift_version,
        },
    );
    keyed(v, key, || credit)
}

/// One item of a CreditDiamondsBatch: CreditDiamonds' fields and rules, without the key.
pub fn parse_credit_item(item: &pb::CreditDiamondsItem) -> Parsed<CreditRequest> {
    let mut v = Violations::default();
    let credit = credit_fields(
        &mut v,
        CreditFields {
            operation_id: &item.operation_id,
            creator_id: &item.creator_id,
            coins: item.coins,
            creator_share_bps: item.creator_share_bps,
            sender_user_id: &item.sender_user_id,
            stream_id: &item.stream_id,
            gift_id: &item.gift_id,
            gift_version: item.gift_version,
        },
    );
    v.finish(|| credit)
}

/// The fields of a credit, as CreditDiamonds and a batch's item both carry them.
struct CreditFields<'a> {
    operation_id: &'a str,
    creator_id: &'a str,
    coins: i64,
    creator_share_bps: i32,
    sender_user_id: &'a str,
    stream_id: &'a str,
    gift_id: &'a str,
    gift_version: i64,
}

/// A credit's fields checked once for both RPCs, each bad one added to `v`.
fn credit_fields(v: &mut Violations, f: CreditFields<'_>) -> Option<CreditRequest> {
    let operation = v.check("operation_id", ResourceId::parse(f.operation_id));
    let creator = v.check("creator_id", ResourceId::parse(f.creator_id));
    let coins = v.check("coins", Coins::parse(f.coins));
    let share = v.check("creator_share_bps", Bps::parse(f.creator_share_bps));
    let sender = v.check("sender_user_id", optional_id(f.sender_user_id));
    let stream = v.check("stream_id", optional_id(f.stream_id));
    let gift = v.check("gift_id", optional_id(f.gift_id));
    if f.gift_version < 0 {
        v.add("gift_version", "must not be negative");
    }
    Some(CreditRequest {
        operation_id: operation?,
        creator_id: creator?,
        coins: coins?,
        share: share?,
        sender_user_id: sender?,
        stream_id: stream?,
        gift_id: gift?,
        gift_version: f.gift_version,
    })
}

pub fn parse_get_diamond_balance(req: &pb::GetDiamondBalanceRequest) -> Parsed<ResourceId> {
    creator_id(&req.creator_id)
}

pub fn parse_list_earnings(req: &pb::ListEarningsRequest) -> Parsed<EarningsQuery> {
    let mut v = Violations::default();
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let stream = v.check("stream_id", optional_id(&req.stream_id));
    let page = page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        Some(EarningsQuery {
            creator_id: id?,
            stream_id: stream?,
            page: page?,
        })
    })
}

pub fn parse_request_payout(
    req: &pb::RequestPayoutRequest,
) -> Parsed<(IdempotencyKey, PayoutOrder)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
    let diamonds = v.check("diamonds", Diamonds::parse(req.diamonds));
    keyed(v, key, || {
        Some(PayoutOrder {
            creator_id: id?,
            diamonds: diamonds?,
        })
    })
}

/// ClawbackDiamonds: keyed by its clawback id (no separate idempotency key).
pub fn parse_clawback_diamonds(req: &pb::ClawbackDiamondsRequest) -> Parsed<ClawbackRequest> {
    let mut v = Violations::default();
    let clawback_id = v.check("clawback_id", ClawbackId::parse(&req.clawback_id));
    let operation_id = v.check("operation_id", ResourceId::parse(&req.operation_id));
    let coins = v.check("coins", Coins::parse(req.coins));
    let cause = v.check("cause", clawback_cause(req.cause));
    let cause_id = v.check("cause_id", ResourceId::parse(&req.cause_id));
    let reason = v.check("reason", Text::parse_required(&req.reason));
    v.finish(|| {
        Some(ClawbackRequest {
            clawback_id: clawback_id?,
            operation_id: operation_id?,
            coins: coins?,
            cause: cause?,
            cause_id: cause_id?,
            reason: reason?,
        })
    })
}

pub fn parse_list_clawbacks(req: &pb::ListClawbacksRequest) -> Parsed<ClawbacksQuery> {
    let mut v = Violations::default();
    let ids = operation_ids(&mut v, &req.operation_ids);
    if !req.operation_ids.is_empty() {
        if !req.creator_id.is_empty() {
            v.add("creator_id", "must be unset when operation_ids are given");
        }
        if req.page_size != 0 {
            v.add("page_size", "must be unset when operation_ids are given");
        }
        if !req.page_token.is_empty() {
            v.add("page_token", "must be unset when operation_ids are given");
        }
    }
    let creator = v.check("creator_id", optional_id(&req.creator_id));
    let page = page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        let (ids, creator_id, page) = (ids?, creator?, page?);
        Some(if ids.is_empty() {
            ClawbacksQuery::Page { creator_id, page }
        } else {
            ClawbacksQuery::ByOperation(ids)
        })
    })
}

fn clawback_cause(raw: i32) -> Result<ClawbackCause, String> {
    match pb::ClawbackCause::try_from(raw) {
        Ok(pb::ClawbackCause::PurchaseReversal) => Ok(ClawbackCause::PurchaseReversal),
        Ok(pb::ClawbackCause::GiftReversal) => Ok(ClawbackCause::GiftReversal),
        Ok(pb::ClawbackCause::Unspecified) => Err("is required".into()),
        Err(_) => Err(format!("{raw} is not a clawback cause")),
    }
}

pub fn parse_get_payout(req: &pb::GetPayoutRequest) -> Parsed<ResourceId> {
    let mut v = Violations::default();
    let id = v.check("payout_id", ResourceId::parse(&req.payout_id));
    v.finish(|| id)
}

pub fn parse_list_payouts(req: &pb::ListPayoutsRequest) -> Parsed<PayoutsQuery> {
    let mut v = Violations::default();
    let creator = v.check("creator_id", optional_id(&req.creator_id));
    let state = v.check("state", state_filter(req.state));
    let page = page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        Some(PayoutsQuery {
            creator_id: creator?,
            state: state?,
            page: page?,
        })
    })
}

/// Either named operations (nothing else set) or a page of a time window.
pub fn parse_list_credits(req: &pb::ListCreditsRequest) -> Parsed<CreditsQuery> {
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
    v.finish(|| {
        let (ids, page, window) = (ids?, page?, window?);
        Some(if ids.is_empty() {
            CreditsQuery::Window { window, page }
        } else {
            CreditsQuery::ByOperation(ids)
        })
    })
}

pub fn parse_review_payout(
    req: &pb::ReviewPayoutRequest,
    subject: &str,
) -> Parsed<(IdempotencyKey, PayoutVerdict)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("payout_id", ResourceId::parse(&req.payout_id));
    let decision = v.check("decision", payout_decision(req.decision));
    let reason = v.noted_reason(Text::parse_required(&req.reason), &req.actor, subject);
    keyed(v, key, || {
        Some(PayoutVerdict {
            payout_id: id?,
            decision: decision?,
            reason: reason?,
        })
    })
}

pub fn parse_cancel_payout(
    req: &pb::CancelPayoutRequest,
    subject: &str,
) -> Parsed<(IdempotencyKey, PayoutCancel)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let id = v.check("payout_id", ResourceId::parse(&req.payout_id));
    let reason = v.noted_reason(Text::parse_required(&req.reason), &req.actor, subject);
    keyed(v, key, || {
        Some(PayoutCancel {
            payout_id: id?,
            reason: reason?,
        })
    })
}

// ---- fields ------------------------------------------------------------------------

fn creator_id(raw: &str) -> Parsed<ResourceId> {
    let mut v = Violations::default();
    let id = v.check("creator_id", ResourceId::parse(raw));
    v.finish(|| id)
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
    key: &str,
    creator_id: &str,
    actor: &str,
    reason: &str,
    subject: &str,
) -> Parsed<(IdempotencyKey, StatusChange)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, key);
    let id = v.check("creator_id", ResourceId::parse(creator_id));
    let reason = v.noted_reason(Text::parse_required(reason), actor, subject);
    keyed(v, key, || {
        Some(StatusChange {
            creator_id: id?,
            reason: reason?,
        })
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

fn payout_decision(raw: i32) -> Result<PayoutDecision, String> {
    match pb::PayoutReviewDecision::try_from(raw) {
        Ok(pb::PayoutReviewDecision::Approve) => Ok(PayoutDecision::Approve),
        Ok(pb::PayoutReviewDecision::Reject) => Ok(PayoutDecision::Reject),
        _ => Err("must be PAYOUT_REVIEW_DECISION_APPROVE or PAYOUT_REVIEW_DECISION_REJECT".into()),
    }
}

fn state_filter(raw: i32) -> Result<Option<PayoutState>, String> {
    match pb::PayoutState::try_from(raw) {
        Ok(pb::PayoutState::Unspecified) => Ok(None),
        Ok(pb::PayoutState::Review) => Ok(Some(PayoutState::Review)),
        Ok(pb::PayoutState::Held) => Ok(Some(PayoutState::Held)),
        Ok(pb::PayoutState::Paid) => Ok(Some(PayoutState::Paid)),
        Ok(pb::PayoutState::Released) => Ok(Some(PayoutState::Released)),
        // Never stored (see PayoutState): a filter on them matches nothing, honestly.
        Ok(pb::PayoutState::Requested | pb::PayoutState::Failed) => Err(
            "REQUESTED and FAILED are never at rest (a payout is REVIEW, HELD, PAID or \
             RELEASED)"
                .into(),
        ),
        Err(_) => Err(format!("{raw} is not a payout state")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields an INVALID_ARGUMENT names, in order.
    fn fields<T: std::fmt::Debug>(parsed: Parsed<T>) -> Vec<String> {
        match parsed {
            Err(violations) => violations.into_iter().map(|v| v.field).collect(),
            Ok(parsed) => panic!("expected violations, got {parsed:?}"),
        }
    }

    fn id(raw: &str) -> ResourceId {
        ResourceId::parse(raw).unwrap()
    }

    #[test]
    fn register_creator_gives_the_key_and_the_registration() {
        let req = pb::RegisterCreatorRequest {
            idempotency_key: "k1".into(),
            creator_id: "ann".into(),
            display_name: "Ann".into(),
        };
        let (key, registration) = parse_register_creator(&req).unwrap();
        assert_eq!(key.as_str(), "k1");
        assert_eq!(registration.creator_id, id("ann"));
        assert_eq!(registration.display_name.as_str(), "Ann");
        let bad = pb::RegisterCreatorRequest {
            creator_id: "a b".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_register_creator(&bad)),
            ["idempotency_key", "creator_id", "display_name"]
        );
    }

    #[test]
    fn set_payout_account_checks_the_reference() {
        let req = pb::SetPayoutAccountRequest {
            idempotency_key: "k1".into(),
            creator_id: "ann".into(),
            account_reference: "has space".into(),
            holder_name: "Ann A".into(),
        };
        assert_eq!(
            fields(parse_set_payout_account(&req, AccountReferences::Any)),
            ["account_reference"]
        );
        // With Stripe Connect, only connected account ids.
        let sandbox = pb::SetPayoutAccountRequest {
            account_reference: "sandbox-ok".into(),
            ..req.clone()
        };
        assert!(parse_set_payout_account(&sandbox, AccountReferences::Any).is_ok());
        assert_eq!(
            fields(parse_set_payout_account(
                &sandbox,
                AccountReferences::ConnectedAccounts
            )),
            ["account_reference"]
        );
        let connected = pb::SetPayoutAccountRequest {
            account_reference: "acct_1MTfjCQ9PRzxEwkZ".into(),
            ..req
        };
        assert!(parse_set_payout_account(&connected, AccountReferences::ConnectedAccounts).is_ok());
    }

    #[test]
    fn connected_account_ids_are_recognised() {
        use crate::domain::is_connected_account;
        assert!(is_connected_account("acct_1MTfjCQ9PRzxEwkZ"));
        for bad in [
            "acct_",
            "sandbox-ok",
            "acct_12 3",
            "acct-123",
            "ACCT_1",
            "acct_a/b",
        ] {
            assert!(!is_connected_account(bad), "{bad}");
        }
        assert!(!is_connected_account(&format!("acct_{}", "a".repeat(65))));
    }

    fn verify_request() -> pb::VerifyPayoutAccountRequest {
        pb::VerifyPayoutAccountRequest {
            idempotency_key: "k1".into(),
            creator_id: "ann".into(),
            decision: pb::VerificationStatus::Verified.into(),
            account_reference: String::new(),
            actor: String::new(),
            reason: "documents checked".into(),
            account_version: 2,
        }
    }

    #[test]
    fn a_review_names_the_version_read_and_notes_a_reported_actor() {
        let (_, review) = parse_verify_payout_account(&verify_request(), "ops").unwrap();
        assert_eq!(review.decision, Decision::Verify);
        assert_eq!(
            review.reviewed,
            ReviewedAccount {
                version: 2,
                reference: None
            }
        );
        assert_eq!(review.reason.as_str(), "documents checked");
        let reported = pb::VerifyPayoutAccountRequest {
            actor: "eve".into(),
            decision: pb::VerificationStatus::Rejected.into(),
            ..verify_request()
        };
        let (_, review) = parse_verify_payout_account(&reported, "ops").unwrap();
        assert_eq!(review.decision, Decision::Reject);
        assert_eq!(
            review.reason.as_str(),
            "documents checked (reported by: eve)"
        );
    }

    #[test]
    fn a_review_needs_a_decision_a_version_and_a_reason() {
        for decision in [
            pb::VerificationStatus::Unspecified,
            pb::VerificationStatus::Pending,
        ] {
            let req = pb::VerifyPayoutAccountRequest {
                decision: decision.into(),
                account_version: 0,
                reason: String::new(),
                ..verify_request()
            };
            assert_eq!(
                fields(parse_verify_payout_account(&req, "ops")),
                ["decision", "account_version", "reason"]
            );
        }
    }

    #[test]
    fn suspension_and_reinstatement_parse_alike() {
        let suspend = pb::SuspendCreatorRequest {
            idempotency_key: "k1".into(),
            creator_id: "ann".into(),
            actor: "ops".into(),
            reason: "fraud".into(),
        };
        let (key, change) = parse_suspend_creator(&suspend, "ops").unwrap();
        assert_eq!(key.as_str(), "k1");
        // The reported actor is the caller: nothing to note.
        assert_eq!(change.reason.as_str(), "fraud");
        let reinstate = pb::ReinstateCreatorRequest {
            idempotency_key: String::new(),
            creator_id: "ann".into(),
            actor: String::new(),
            reason: String::new(),
        };
        assert_eq!(
            fields(parse_reinstate_creator(&reinstate, "ops")),
            ["idempotency_key", "reason"]
        );
    }

    fn credit_request() -> pb::CreditDiamondsRequest {
        pb::CreditDiamondsRequest {
            idempotency_key: "k1".into(),
            operation_id: "op1".into(),
            creator_id: "ann".into(),
            coins: 100,
            creator_share_bps: 5_000,
            sender_user_id: "bob".into(),
            stream_id: String::new(),
            gift_id: "rose".into(),
            gift_version: 3,
        }
    }

    #[test]
    fn a_credit_keeps_its_optional_ids_optional() {
        let (_, credit) = parse_credit_diamonds(&credit_request()).unwrap();
        assert_eq!(credit.operation_id, id("op1"));
        assert_eq!(credit.coins.get(), 100);
        assert_eq!(credit.share.get(), 5_000);
        assert_eq!(credit.sender_user_id, Some(id("bob")));
        assert_eq!(credit.stream_id, None);
        assert_eq!(credit.gift_version, 3);
        let bad = pb::CreditDiamondsRequest {
            coins: 0,
            creator_share_bps: 10_001,
            stream_id: "no space".into(),
            gift_version: -1,
            ..credit_request()
        };
        assert_eq!(
            fields(parse_credit_diamonds(&bad)),
            ["coins", "creator_share_bps", "stream_id", "gift_version"]
        );
    }

    #[test]
    fn a_batch_item_is_read_by_the_rules_of_a_single_credit() {
        let single = credit_request();
        let item = |r: &pb::CreditDiamondsRequest| pb::CreditDiamondsItem {
            operation_id: r.operation_id.clone(),
            creator_id: r.creator_id.clone(),
            coins: r.coins,
            creator_share_bps: r.creator_share_bps,
            sender_user_id: r.sender_user_id.clone(),
            stream_id: r.stream_id.clone(),
            gift_id: r.gift_id.clone(),
            gift_version: r.gift_version,
        };
        assert_eq!(
            parse_credit_item(&item(&single)).unwrap(),
            parse_credit_diamonds(&single).unwrap().1
        );
        let bad = pb::CreditDiamondsRequest {
            operation_id: String::new(),
            coins: 0,
            creator_share_bps: 10_001,
            stream_id: "no space".into(),
            gift_version: -1,
            ..credit_request()
        };
        assert_eq!(
            fields(parse_credit_item(&item(&bad))),
            [
                "operation_id",
                "coins",
                "creator_share_bps",
                "stream_id",
                "gift_version"
            ]
        );
    }

    #[test]
    fn a_payout_request_needs_diamonds() {
        let req = pb::RequestPayoutRequest {
            idempotency_key: "k1".into(),
            creator_id: "ann".into(),
            diamonds: 0,
        };
        assert_eq!(fields(parse_request_payout(&req)), ["diamonds"]);
    }

    #[test]
    fn payouts_filter_only_on_states_at_rest() {
        let query = |state: pb::PayoutState| {
            parse_list_payouts(&pb::ListPayoutsRequest {
                state: state.into(),
                ..Default::default()
            })
        };
        assert_eq!(query(pb::PayoutState::Unspecified).unwrap().state, None);
        assert_eq!(
            query(pb::PayoutState::Held).unwrap().state,
            Some(PayoutState::Held)
        );
        assert_eq!(
            query(pb::PayoutState::Released).unwrap().state,
            Some(PayoutState::Released)
        );
        assert_eq!(
            query(pb::PayoutState::Review).unwrap().state,
            Some(PayoutState::Review)
        );
        assert_eq!(fields(query(pb::PayoutState::Requested)), ["state"]);
        assert_eq!(fields(query(pb::PayoutState::Failed)), ["state"]);
        let unknown = pb::ListPayoutsRequest {
            state: 99,
            page_token: "not a token".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_list_payouts(&unknown)),
            ["state", "page_token"]
        );
    }

    #[test]
    fn earnings_page_after_a_token() {
        let token = PageToken::after(&PageToken::keyset_cursor(7, "op1"));
        let query = parse_list_earnings(&pb::ListEarningsRequest {
            creator_id: "ann".into(),
            stream_id: "s1".into(),
            page_size: 10,
            page_token: token,
        })
        .unwrap();
        assert_eq!(query.stream_id, Some(id("s1")));
        assert_eq!(query.page.after, Some((7, "op1".to_owned())));
    }

    #[test]
    fn credits_are_named_or_windowed_never_both() {
        let named = pb::ListCreditsRequest {
            operation_ids: vec!["op1".into(), "op2".into()],
            ..Default::default()
        };
        assert_eq!(
            parse_list_credits(&named).unwrap(),
            CreditsQuery::ByOperation(vec![id("op1"), id("op2")])
        );
        assert!(matches!(
            parse_list_credits(&pb::ListCreditsRequest::default()).unwrap(),
            CreditsQuery::Window { .. }
        ));
        let both = pb::ListCreditsRequest {
            operation_ids: vec!["op1".into(), "bad id".into()],
            page_size: 5,
            start_time: Some(prost_types::Timestamp::default()),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_list_credits(&both)),
            ["operation_ids[1]", "page_size", "start_time"]
        );
        let too_many = pb::ListCreditsRequest {
            operation_ids: vec!["op".into(); LIST_CREDITS_IDS_MAX + 1],
            ..Default::default()
        };
        assert_eq!(fields(parse_list_credits(&too_many)), ["operation_ids"]);
    }

    fn clawback_request() -> pb::ClawbackDiamondsRequest {
        pb::ClawbackDiamondsRequest {
            clawback_id: "purchase:p1:saga-1".into(),
            operation_id: "saga-1".into(),
            coins: 10,
            cause: pb::ClawbackCause::PurchaseReversal as i32,
            cause_id: "p1".into(),
            reason: "chargeback".into(),
        }
    }

    #[test]
    fn a_clawback_names_every_bad_field() {
        let parsed = parse_clawback_diamonds(&clawback_request()).unwrap();
        assert_eq!(parsed.clawback_id.as_str(), "purchase:p1:saga-1");
        assert_eq!(parsed.cause, ClawbackCause::PurchaseReversal);
        let bad = pb::ClawbackDiamondsRequest {
            clawback_id: String::new(),
            operation_id: String::new(),
            coins: 0,
            cause: 0,
            cause_id: String::new(),
            reason: String::new(),
        };
        assert_eq!(
            fields(parse_clawback_diamonds(&bad)),
            [
                "clawback_id",
                "operation_id",
                "coins",
                "cause",
                "cause_id",
                "reason"
            ]
        );
        let bad = pb::ClawbackDiamondsRequest {
            clawback_id: "c".repeat(129),
            coins: 1_000_000_000_001,
            cause: 7,
            reason: "r".repeat(501),
            ..clawback_request()
        };
        assert_eq!(
            fields(parse_clawback_diamonds(&bad)),
            ["clawback_id", "coins", "cause", "reason"]
        );
    }

    #[test]
    fn clawbacks_are_named_or_paged_never_both() {
        let named = pb::ListClawbacksRequest {
            operation_ids: vec!["saga-1".into()],
            creator_id: "ann".into(),
            page_size: 5,
            ..Default::default()
        };
        assert_eq!(
            fields(parse_list_clawbacks(&named)),
            ["creator_id", "page_size"]
        );
        let paged = pb::ListClawbacksRequest {
            creator_id: "ann".into(),
            ..Default::default()
        };
        assert!(matches!(
            parse_list_clawbacks(&paged).unwrap(),
            ClawbacksQuery::Page {
                creator_id: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_payout_is_named_by_its_id() {
        let req = pb::GetPayoutRequest {
            payout_id: String::new(),
        };
        assert_eq!(fields(parse_get_payout(&req)), ["payout_id"]);
    }

    #[test]
    fn a_payout_review_names_the_payout_a_decision_and_why() {
        let req = pb::ReviewPayoutRequest {
            idempotency_key: "k1".into(),
            payout_id: "po_1".into(),
            decision: pb::PayoutReviewDecision::Reject.into(),
            reason: "looks like fraud".into(),
            actor: "risk-team".into(),
        };
        let (key, verdict) = parse_review_payout(&req, "ops").unwrap();
        assert_eq!(key.as_str(), "k1");
        assert_eq!(verdict.payout_id, id("po_1"));
        assert_eq!(verdict.decision, PayoutDecision::Reject);
        assert_eq!(
            verdict.reason.as_str(),
            "looks like fraud (reported by: risk-team)"
        );
        let bad = pb::ReviewPayoutRequest {
            payout_id: "a b".into(),
            decision: pb::PayoutReviewDecision::Unspecified.into(),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_review_payout(&bad, "ops")),
            ["idempotency_key", "payout_id", "decision", "reason"]
        );
        let unknown = pb::ReviewPayoutRequest { decision: 7, ..req };
        assert_eq!(fields(parse_review_payout(&unknown, "ops")), ["decision"]);
    }

    #[test]
    fn a_cancellation_names_the_payout_and_why() {
        let req = pb::CancelPayoutRequest {
            idempotency_key: "k1".into(),
            payout_id: "po_1".into(),
            reason: "creator asked".into(),
            actor: String::new(),
        };
        let (_, cancel) = parse_cancel_payout(&req, "ops").unwrap();
        assert_eq!(
            (cancel.payout_id, cancel.reason.as_str()),
            (id("po_1"), "creator asked")
        );
        let bad = pb::CancelPayoutRequest {
            reason: "r".repeat(501),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_cancel_payout(&bad, "ops")),
            ["idempotency_key", "payout_id", "reason"]
        );
    }
}
