//! The gRPC edge, kept thin: check who may call (first line of every RPC), parse the
//! request into a domain command (`parse`), run it ([`crate::operations`]), answer
//! with proto values (`to_proto`, which also maps every domain error to its reason
//! once). Proto types stop here.
//!
//! Authorization (ARCHITECTURE.md, authorization matrix):
//! - a creator's own records (RegisterCreator, GetCreator, GetDiamondBalance,
//!   ListEarnings, RequestPayout, GetPayout, ListPayouts of one creator): that creator (a
//!   `creator` token for them, or the `gateway` acting for them) or an `admin`;
//! - where a creator is paid (SetPayoutAccount): that creator only (or the gateway for
//!   them), never an admin: the one who verifies an account must not be able to set it;
//! - operations on creators and payouts, and audit reads (VerifyPayoutAccount,
//!   SuspendCreator, ReinstateCreator, ReviewPayout, CancelPayout, GetLedgerSummary,
//!   ListCredits, ListPayouts of every creator): `admin`;
//! - CreditDiamonds, CreditDiamondsBatch: `service:gifting` only; diamonds are minted by
//!   gifts, not by people.
//! - ClawbackDiamonds: `service:wallet` (reversed purchases), `service:gifting` (reversed
//!   gifts) and `admin`; ListClawbacks: `admin`.
//!
//! Idempotency keys are scoped to the caller and the RPC ([`IdempotentCall`]) and to the
//! creator a request is about (`<creator>/<key>`; for ReviewPayout and CancelPayout, the
//! payout: `<payout>/<key>`), so two creators choosing the same key never collide.
//!
//! Who did something is the authenticated caller ([`Who`]), never a request field: the
//! `actor` fields of the contract are recorded as a note in the reason.

mod parse;
mod to_proto;

use futures::FutureExt;
use futures::future::BoxFuture;
use ovation_auth::{Caller, Role};
use ovation_proto::payout as pb;
use ovation_proto::payout::payout_service_server::PayoutService;
use ovation_server::error::check_batch_len;
use ovation_server::{ApiError, IdempotentCall, access, edge};
use ovation_store::db::Conn;
use ovation_store::{Db, Replayed, StoreError};
use ovation_types::{Clock, IdempotencyKey, Name, ResourceId};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

pub use self::parse::LIST_CREDITS_IDS_MAX;
use self::parse::{
    parse_cancel_payout, parse_clawback_diamonds, parse_credit_diamonds, parse_credit_item,
    parse_get_creator, parse_get_diamond_balance, parse_get_payout, parse_list_clawbacks,
    parse_list_credits, parse_list_earnings, parse_list_payouts, parse_register_creator,
    parse_reinstate_creator, parse_request_payout, parse_review_payout, parse_set_payout_account,
    parse_suspend_creator, parse_verify_payout_account,
};
use self::to_proto::CreatorReply;
use crate::domain::{AccountReferences, Creator, Payout};
use crate::economy::Economy;
use crate::operations::creators::{self, Reviewer};
use crate::operations::{PayoutError, Who, clawbacks, ledger, payouts};
use crate::worker::Wakeup;

type Reply<T> = Result<Response<T>, Status>;

/// The payout service's gRPC service.
#[derive(Clone, Debug)]
pub struct PayoutApi {
    db: Db,
    economy: Economy,
    wakeup: Wakeup,
    clock: Clock,
    /// Which payout account references the configured provider can pay to.
    references: AccountReferences,
}

/// Runs of a clawback when a concurrent twin (same id, another creator's credit) commits
/// first: the second run answers it as a retry.
const CLAWBACK_RUNS_MAX: usize = 2;

impl PayoutApi {
    pub fn new(
        db: Db,
        economy: Economy,
        wakeup: Wakeup,
        clock: Clock,
        references: AccountReferences,
    ) -> Self {
        PayoutApi {
            db,
            economy,
            wakeup,
            clock,
            references,
        }
    }

    /// Runs `change` once per idempotency key and answers with the creator as it left
    /// them: every RPC that changes a creator.
    async fn change_creator<R, F>(
        &self,
        call: &IdempotentCall,
        key: &IdempotencyKey,
        change: F,
    ) -> Reply<R>
    where
        R: CreatorReply + prost::Message + Default + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<Creator, PayoutError>>
            + Send
            + 'static,
    {
        let response = call
            .run(&self.db, key, |conn: &mut Conn| {
                async move { Ok::<_, ApiError>(R::of(to_proto::creator(&change(conn).await?))) }
                    .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    /// Runs `change` of one payout once per idempotency key; answers with the payout as
    /// it left it, in the RPC's response `R` (ReviewPayout, CancelPayout).
    async fn change_payout<R, F>(
        &self,
        call: &IdempotentCall,
        key: &IdempotencyKey,
        answer: fn(pb::Payout) -> R,
        change: F,
    ) -> Reply<R>
    where
        R: prost::Message + Default + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<Payout, PayoutError>>
            + Send
            + 'static,
    {
        let response = call
            .run(&self.db, key, |conn: &mut Conn| {
                async move { Ok::<_, ApiError>(answer(to_proto::payout(&change(conn).await?))) }
                    .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    /// A replayed RequestPayout's answer: the payout as it is now, not as first recorded.
    async fn current_payout(&self, recorded: pb::Payout) -> Result<pb::Payout, ApiError> {
        let current = payouts::current(&self.db, &recorded.payout_id).await?;
        Ok(current.map(|p| to_proto::payout(&p)).unwrap_or(recorded))
    }
}

// ---- who may call ------------------------------------------------------------------

/// The caller, if it may act on creator `creator_id`'s own records: that creator (role
/// `creator`, or the `gateway` acting for them) or an admin. PERMISSION_DENIED otherwise.
fn require_creator<T>(request: &Request<T>, creator_id: &str) -> Result<Caller, ApiError> {
    let caller = access::require_user(request, creator_id, &[Role::Admin])?;
    if caller.has(Role::Admin) || caller.has_any(&[Role::Creator, Role::Gateway]) {
        Ok(caller)
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may not act for creator {creator_id}: it requires the role creator (or gateway) \
             for that creator, or admin",
            caller.subject()
        )))
    }
}

/// After loading a record of `creator_id`: may `caller` see it?
fn check_creator(caller: &Caller, creator_id: &ResourceId) -> Result<(), ApiError> {
    if caller.has(Role::Admin)
        || (caller.is_user(creator_id.as_str()) && caller.has_any(&[Role::Creator, Role::Gateway]))
    {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may not read creator {creator_id}'s records",
            caller.subject()
        )))
    }
}

/// The caller, if it may say where creator `creator_id` is paid: that creator (role
/// `creator`, or the `gateway` acting for them). Nobody else, admins included: the one
/// who verifies an account must not be the one who can change it (four eyes).
fn require_account_owner<T>(request: &Request<T>, creator_id: &str) -> Result<Caller, ApiError> {
    let caller = access::caller(request)?;
    if caller.is_user(creator_id) && caller.has_any(&[Role::Creator, Role::Gateway]) {
        Ok(caller)
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may not set creator {creator_id}'s payout account: only the creator (or the \
             gateway for them) says where they are paid; admins verify it",
            caller.subject()
        )))
    }
}

/// Who made a call, as the journal records it.
fn who(caller: &Caller) -> Who {
    Who {
        subject: caller.subject().to_owned(),
        label: match caller.actor() {
            Some(actor) => format!("{} via {actor}", caller.subject()),
            None => caller.subject().to_owned(),
        },
    }
}

/// The operator making a call, whose subject is a review's or suspension's actor.
fn reviewer(caller: &Caller) -> Result<Reviewer, ApiError> {
    let actor = Name::parse(caller.subject())
        .map_err(|e| ApiError::Internal(format!("caller subject as an actor: {e}")))?;
    Ok(Reviewer {
        who: who(caller),
        actor,
    })
}

/// The idempotency key, scoped to the creator the request is about.
fn scoped_key(creator: &ResourceId, key: &IdempotencyKey) -> Result<IdempotencyKey, ApiError> {
    let plain = format!("{creator}/{}", key.as_str());
    let scoped = if plain.len() <= ovation_types::limits::IDEMPOTENCY_KEY_CHARS_MAX {
        plain
    } else {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{creator}/sha256:{hex}")
    };
    IdempotencyKey::parse(&scoped).map_err(|e| ApiError::Internal(format!("scoped key: {e}")))
}

// ---- the RPCs ----------------------------------------------------------------------

#[tonic::async_trait]
impl PayoutService for PayoutApi {
    async fn register_creator(
        &self,
        request: Request<pb::RegisterCreatorRequest>,
    ) -> Reply<pb::RegisterCreatorResponse> {
        let caller = require_creator(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "RegisterCreator", &req);
        let (key, registration) = parse_register_creator(&req).map_err(ApiError::from)?;
        let key = scoped_key(&registration.creator_id, &key)?;
        let who = who(&caller);
        let clock = self.clock.clone();
        self.change_creator(&call, &key, move |conn| {
            async move { creators::register(conn, registration, who, &clock).await }.boxed()
        })
        .await
    }

    async fn get_creator(
        &self,
        request: Request<pb::GetCreatorRequest>,
    ) -> Reply<pb::GetCreatorResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let id = parse_get_creator(request.get_ref()).map_err(ApiError::from)?;
        let creator = creators::creator(&self.db, &id).await?;
        Ok(Response::new(pb::GetCreatorResponse {
            creator: Some(to_proto::creator(&creator)),
        }))
    }

    async fn set_payout_account(
        &self,
        request: Request<pb::SetPayoutAccountRequest>,
    ) -> Reply<pb::SetPayoutAccountResponse> {
        let caller = require_account_owner(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "SetPayoutAccount", &req);
        let (key, change) =
            parse_set_payout_account(&req, self.references).map_err(ApiError::from)?;
        let key = scoped_key(&change.creator_id, &key)?;
        let who = who(&caller);
        let clock = self.clock.clone();
        self.change_creator(&call, &key, move |conn| {
            async move { creators::set_payout_account(conn, change, who, &clock).await }.boxed()
        })
        .await
    }

    async fn verify_payout_account(
        &self,
        request: Request<pb::VerifyPayoutAccountRequest>,
    ) -> Reply<pb::VerifyPayoutAccountResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "VerifyPayoutAccount", &req);
        let (key, review) =
            parse_verify_payout_account(&req, caller.subject()).map_err(ApiError::from)?;
        let reviewer = reviewer(&caller)?;
        // With authentication off (--insecure-no-auth) every caller is the same nobody:
        // four eyes cannot apply.
        let four_eyes = caller != Caller::unchecked();
        let key = scoped_key(&review.creator_id, &key)?;
        let clock = self.clock.clone();
        self.change_creator(&call, &key, move |conn| {
            async move {
                creators::review_payout_account(conn, review, reviewer, four_eyes, &clock).await
            }
            .boxed()
        })
        .await
    }

    async fn suspend_creator(
        &self,
        request: Request<pb::SuspendCreatorRequest>,
    ) -> Reply<pb::SuspendCreatorResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "SuspendCreator", &req);
        let (key, change) =
            parse_suspend_creator(&req, caller.subject()).map_err(ApiError::from)?;
        let reviewer = reviewer(&caller)?;
        let key = scoped_key(&change.creator_id, &key)?;
        let clock = self.clock.clone();
        self.change_creator(&call, &key, move |conn| {
            async move { creators::suspend(conn, change, reviewer, &clock).await }.boxed()
        })
        .await
    }

    async fn reinstate_creator(
        &self,
        request: Request<pb::ReinstateCreatorRequest>,
    ) -> Reply<pb::ReinstateCreatorResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "ReinstateCreator", &req);
        let (key, change) =
            parse_reinstate_creator(&req, caller.subject()).map_err(ApiError::from)?;
        let who = who(&caller);
        let key = scoped_key(&change.creator_id, &key)?;
        let clock = self.clock.clone();
        self.change_creator(&call, &key, move |conn| {
            async move { creators::reinstate(conn, change, who, &clock).await }.boxed()
        })
        .await
    }

    async fn credit_diamonds(
        &self,
        request: Request<pb::CreditDiamondsRequest>,
    ) -> Reply<pb::CreditDiamondsResponse> {
        let caller = access::require(&request, &[Role::GiftingService])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CreditDiamonds", &req);
        let (key, credit) = parse_credit_diamonds(&req).map_err(ApiError::from)?;
        let key = scoped_key(&credit.creator_id, &key)?;
        let clock = self.clock.clone();
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let credit = ledger::credit(conn, credit, &clock).await?;
                    Ok::<_, ApiError>(pb::CreditDiamondsResponse {
                        credit: Some(to_proto::credit(&credit)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn credit_diamonds_batch(
        &self,
        request: Request<pb::CreditDiamondsBatchRequest>,
    ) -> Reply<pb::CreditDiamondsBatchResponse> {
        access::require(&request, &[Role::GiftingService])?;
        let items = request.into_inner().items;
        check_batch_len(items.len())?;
        let parsed = items.iter().map(parse_credit_item).collect();
        let answers = edge::answer_batch(parsed, async |credits| {
            let mut tx = self.db.begin_write().await.map_err(ApiError::from)?;
            let results = ledger::credit_batch(&mut tx, credits, &self.clock).await?;
            tx.commit()
                .await
                .map_err(|e| ApiError::from(StoreError::from(e)))?;
            ovation_server::crash_point::reached("batch_committed");
            Ok(results)
        })
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| pb::CreditDiamondsResult {
                outcome: Some(match answer {
                    Ok(credit) => {
                        pb::credit_diamonds_result::Outcome::Credit(to_proto::credit(&credit))
                    }
                    Err(e) => pb::credit_diamonds_result::Outcome::Error(e.into()),
                }),
            })
            .collect();
        Ok(Response::new(pb::CreditDiamondsBatchResponse { results }))
    }

    async fn get_diamond_balance(
        &self,
        request: Request<pb::GetDiamondBalanceRequest>,
    ) -> Reply<pb::GetDiamondBalanceResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let deadline = ovation_server::edge::incoming_deadline(request.metadata());
        let id = parse_get_diamond_balance(request.get_ref()).map_err(ApiError::from)?;
        // Maturity is judged by the catalog's current economy (the last one read while
        // the catalog is unreachable).
        let maturity = self.economy.maturity(deadline).await?;
        let balance = ledger::balance(&self.db, &id, maturity, &self.clock).await?;
        Ok(Response::new(pb::GetDiamondBalanceResponse {
            balance: Some(to_proto::balance(&id, &balance)),
        }))
    }

    async fn list_earnings(
        &self,
        request: Request<pb::ListEarningsRequest>,
    ) -> Reply<pb::ListEarningsResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let query = parse_list_earnings(request.get_ref()).map_err(ApiError::from)?;
        let page = ledger::earnings(&self.db, query).await?;
        Ok(Response::new(pb::ListEarningsResponse {
            credits: page.rows.iter().map(to_proto::credit).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn request_payout(
        &self,
        request: Request<pb::RequestPayoutRequest>,
    ) -> Reply<pb::RequestPayoutResponse> {
        let caller = require_creator(&request, &request.get_ref().creator_id)?;
        let deadline = ovation_server::edge::incoming_deadline(request.metadata());
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "RequestPayout", &req);
        let (key, order) = parse_request_payout(&req).map_err(ApiError::from)?;
        // The rate is read before the write transaction: no network call holds a lock. A
        // failure to read it only matters to a new request: a replay answers without it.
        let terms = self.economy.terms(deadline).await;
        let key = scoped_key(&order.creator_id, &key)?;
        let clock = self.clock.clone();
        let (response, replayed) = call
            .run_telling_replay(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let payout = payouts::request(conn, order, terms?, &clock).await?;
                    Ok::<_, ApiError>(pb::RequestPayoutResponse {
                        payout: Some(to_proto::payout(&payout)),
                    })
                }
                .boxed()
            })
            .await?;
        if replayed == Replayed::No {
            // Fresh: the payout as recorded, HELD (the worker takes it from here) or in
            // REVIEW (the worker leaves it to an admin).
            self.wakeup.wake();
            return Ok(Response::new(response));
        }
        let recorded = response.payout.unwrap_or_default();
        Ok(Response::new(pb::RequestPayoutResponse {
            payout: Some(self.current_payout(recorded).await?),
        }))
    }

    async fn get_payout(
        &self,
        request: Request<pb::GetPayoutRequest>,
    ) -> Reply<pb::GetPayoutResponse> {
        let caller = access::require(&request, &[Role::Admin, Role::Creator, Role::Gateway])?;
        let id = parse_get_payout(request.get_ref()).map_err(ApiError::from)?;
        let payout = payouts::payout(&self.db, &id).await?;
        check_creator(&caller, &payout.creator_id)?;
        Ok(Response::new(pb::GetPayoutResponse {
            payout: Some(to_proto::payout(&payout)),
        }))
    }

    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Reply<pb::ListPayoutsResponse> {
        if request.get_ref().creator_id.is_empty() {
            access::require(&request, &[Role::Admin])?;
        } else {
            require_creator(&request, &request.get_ref().creator_id)?;
        }
        let query = parse_list_payouts(request.get_ref()).map_err(ApiError::from)?;
        let page = payouts::payouts(&self.db, query).await?;
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: page.rows.iter().map(to_proto::payout).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn review_payout(
        &self,
        request: Request<pb::ReviewPayoutRequest>,
    ) -> Reply<pb::ReviewPayoutResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "ReviewPayout", &req);
        let (key, verdict) = parse_review_payout(&req, caller.subject()).map_err(ApiError::from)?;
        let reviewer = reviewer(&caller)?;
        // With authentication off every caller is the same nobody: four eyes cannot apply.
        let four_eyes = caller != Caller::unchecked();
        let key = scoped_key(&verdict.payout_id, &key)?;
        let clock = self.clock.clone();
        let answer = |payout| pb::ReviewPayoutResponse {
            payout: Some(payout),
        };
        let reply = self
            .change_payout(&call, &key, answer, move |conn| {
                async move { payouts::review(conn, verdict, reviewer, four_eyes, &clock).await }
                    .boxed()
            })
            .await?;
        // Approved: HELD and due now; the worker need not wait for its next poll.
        self.wakeup.wake();
        Ok(reply)
    }

    async fn cancel_payout(
        &self,
        request: Request<pb::CancelPayoutRequest>,
    ) -> Reply<pb::CancelPayoutResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CancelPayout", &req);
        let (key, cancel) = parse_cancel_payout(&req, caller.subject()).map_err(ApiError::from)?;
        let reviewer = reviewer(&caller)?;
        let key = scoped_key(&cancel.payout_id, &key)?;
        let clock = self.clock.clone();
        let answer = |payout| pb::CancelPayoutResponse {
            payout: Some(payout),
        };
        self.change_payout(&call, &key, answer, move |conn| {
            async move { payouts::cancel(conn, cancel, reviewer, &clock).await }.boxed()
        })
        .await
    }

    async fn get_ledger_summary(
        &self,
        request: Request<pb::GetLedgerSummaryRequest>,
    ) -> Reply<pb::GetLedgerSummaryResponse> {
        access::require(&request, &[Role::Admin])?;
        let as_of = self.clock.now();
        let summary = ledger::summary(&self.db).await?;
        Ok(Response::new(to_proto::ledger_summary(&summary, as_of)))
    }

    async fn clawback_diamonds(
        &self,
        request: Request<pb::ClawbackDiamondsRequest>,
    ) -> Reply<pb::ClawbackDiamondsResponse> {
        access::require(
            &request,
            &[Role::WalletService, Role::GiftingService, Role::Admin],
        )?;
        let deadline = ovation_server::edge::incoming_deadline(request.metadata());
        let clawback = parse_clawback_diamonds(request.get_ref()).map_err(ApiError::from)?;
        // Read before the transaction (no network call holds a lock): due credits mature
        // before the clawback chooses where to take from.
        let maturity = self.economy.maturity(deadline).await?;
        let mut runs = 0;
        let (applied, balance) = loop {
            runs += 1;
            let mut tx = self.db.begin_write().await.map_err(ApiError::from)?;
            match clawbacks::clawback(&mut tx, clawback.clone(), maturity, &self.clock).await {
                Ok(done) => {
                    tx.commit()
                        .await
                        .map_err(|e| ApiError::from(StoreError::from(e)))?;
                    break done;
                }
                Err(PayoutError::ConcurrentClawback) if runs < CLAWBACK_RUNS_MAX => {
                    tx.rollback()
                        .await
                        .map_err(|e| ApiError::from(StoreError::from(e)))?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Response::new(pb::ClawbackDiamondsResponse {
            clawback: Some(to_proto::clawback(&applied)),
            balance: Some(to_proto::balance(&applied.creator_id, &balance)),
        }))
    }

    async fn list_clawbacks(
        &self,
        request: Request<pb::ListClawbacksRequest>,
    ) -> Reply<pb::ListClawbacksResponse> {
        access::require(&request, &[Role::Admin])?;
        let query = parse_list_clawbacks(request.get_ref()).map_err(ApiError::from)?;
        let page = clawbacks::clawbacks(&self.db, query).await?;
        Ok(Response::new(pb::ListClawbacksResponse {
            clawbacks: page.rows.iter().map(to_proto::clawback).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_credits(
        &self,
        request: Request<pb::ListCreditsRequest>,
    ) -> Reply<pb::ListCreditsResponse> {
        access::require(&request, &[Role::Admin])?;
        let query = parse_list_credits(request.get_ref()).map_err(ApiError::from)?;
        let page = ledger::credits(&self.db, query).await?;
        Ok(Response::new(pb::ListCreditsResponse {
            credits: page.rows.iter().map(to_proto::credit).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_to_the_creator_and_stay_bounded() {
        let ann = ResourceId::parse("ann").unwrap();
        let bob = ResourceId::parse("bob").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        assert_ne!(
            scoped_key(&ann, &key).unwrap(),
            scoped_key(&bob, &key).unwrap()
        );
        let long = IdempotencyKey::parse(&"k".repeat(255)).unwrap();
        let other = IdempotencyKey::parse(&format!("{}j", "k".repeat(254))).unwrap();
        let id = ResourceId::parse(&"c".repeat(64)).unwrap();
        let a = scoped_key(&id, &long).unwrap();
        assert!(a.as_str().len() <= 255);
        assert_ne!(a, scoped_key(&id, &other).unwrap());
    }
}
