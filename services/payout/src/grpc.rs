//! The gRPC layer, kept thin: check who may call (first line of every RPC), parse the
//! request into domain values (every bound checked here, every bad field reported), call
//! the domain and the store, map the outcome to a response or an [`ApiError`]. Proto
//! types stop here.
//!
//! Authorization (ARCHITECTURE.md, authorization matrix):
//! - a creator's own records (RegisterCreator, GetCreator, GetDiamondBalance,
//!   ListEarnings, RequestPayout, GetPayout, ListPayouts of one creator): that creator (a
//!   `creator` token for them, or the `gateway` acting for them) or an `admin`;
//! - where a creator is paid (SetPayoutAccount): that creator only (or the gateway for
//!   them), never an admin: the one who verifies an account must not be able to set it;
//! - operations on creators and audit reads (VerifyPayoutAccount, SuspendCreator,
//!   ReinstateCreator, GetLedgerSummary, ListCredits, ListPayouts of every creator):
//!   `admin`;
//! - CreditDiamonds: `service:gifting` only; diamonds are minted by gifts, not by people.
//!
//! Idempotency keys are scoped to the creator a request is about (`<creator>/<key>`), so
//! two creators choosing the same key never collide.
//!
//! Who did something is the authenticated caller ([`Who`]), never a request field: the
//! `actor` fields of the contract are recorded as a note in the reason.

use futures::FutureExt;
use ovation_auth::{Caller, Role};
use ovation_proto::payout as pb;
use ovation_proto::payout::payout_service_server::PayoutService;
use ovation_proto::reasons;
use ovation_server::edge::{time_window, to_money, to_timestamp};
use ovation_server::{ApiError, access};
use ovation_store::db::Conn;
use ovation_store::sqlx::Any;
use ovation_store::sqlx::pool::PoolConnection;
use ovation_store::{Db, Fingerprint, KeyScope, Replayed};
use ovation_types::{
    Bps, Coins, Diamonds, IdempotencyKey, Name, PageSize, PageToken, ResourceId, Text, UnixMillis,
    Violations,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::domain::{
    AccountKind, AccountReference, Balance, Creator, Credit, CreditRequest, Decision, Payout,
    PayoutRule, PayoutState, Review, ReviewedAccount, Verification,
};
use crate::economy::{Economy, incoming_deadline};
use crate::store::{self, CreatorEvent, Posted};
use crate::worker::Wakeup;

type Reply<T> = Result<Response<T>, Status>;

/// Most operation ids one ListCredits may name.
pub const LIST_CREDITS_IDS_MAX: usize = 500;

/// The payout service's gRPC service.
#[derive(Clone, Debug)]
pub struct Payouts {
    db: Db,
    economy: Economy,
    wakeup: Wakeup,
}

impl Payouts {
    pub fn new(db: Db, economy: Economy, wakeup: Wakeup) -> Self {
        Payouts {
            db,
            economy,
            wakeup,
        }
    }

    async fn read(&self) -> Result<PoolConnection<Any>, ApiError> {
        Ok(self.db.conn().await?)
    }
}

// ---- authorization -----------------------------------------------------------------

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

/// Who made a call, as authenticated: what the journal and reviews record.
#[derive(Clone, Debug)]
struct Who {
    /// The token's subject: the actor of record.
    subject: String,
    /// The subject, and the gateway that presented the token, if any.
    label: String,
}

impl Who {
    fn of(caller: &Caller) -> Who {
        Who {
            subject: caller.subject().to_owned(),
            label: match caller.actor() {
                Some(actor) => format!("{} via {actor}", caller.subject()),
                None => caller.subject().to_owned(),
            },
        }
    }

    /// The subject as a review's or suspension's actor.
    fn as_actor(&self) -> Result<Name, ApiError> {
        Name::parse(&self.subject)
            .map_err(|e| ApiError::Internal(format!("caller subject as an actor: {e}")))
    }
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

// ---- parsing -----------------------------------------------------------------------

fn optional_id(raw: &str) -> Result<Option<ResourceId>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        ResourceId::parse(raw).map(Some)
    }
}

fn parse_decision(raw: i32) -> Result<Decision, String> {
    match pb::VerificationStatus::try_from(raw) {
        Ok(pb::VerificationStatus::Verified) => Ok(Decision::Verify),
        Ok(pb::VerificationStatus::Rejected) => Ok(Decision::Reject),
        _ => Err("must be VERIFICATION_STATUS_VERIFIED or VERIFICATION_STATUS_REJECTED".into()),
    }
}

fn parse_state_filter(raw: i32) -> Result<Option<PayoutState>, String> {
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

/// What an admin's decision on a creator carries (SuspendCreator, ReinstateCreator): its
/// idempotency key, the creator, and the reason with any reported actor as a note.
fn parse_creator_decision(
    caller: &Caller,
    idempotency_key: &str,
    creator_id: &str,
    actor: &str,
    reason: &str,
) -> Result<(IdempotencyKey, ResourceId, Text), ApiError> {
    let mut v = Violations::default();
    let key = v.check("idempotency_key", IdempotencyKey::parse(idempotency_key));
    let id = v.check("creator_id", ResourceId::parse(creator_id));
    let reason = v.noted_reason(Text::parse_required(reason), actor, caller.subject());
    v.finish(|| Some((key?, id?, reason?)))
        .map_err(ApiError::from)
}

// ---- errors ------------------------------------------------------------------------

fn rule_error(rule: PayoutRule) -> ApiError {
    let message = rule.to_string();
    let reason = match rule {
        PayoutRule::CreatorSuspended => reasons::payout::CREATOR_SUSPENDED,
        PayoutRule::AccountNotVerified(_) => reasons::payout::PAYOUT_ACCOUNT_NOT_VERIFIED,
        PayoutRule::NoPayoutAccount => reasons::payout::NO_PAYOUT_ACCOUNT,
        PayoutRule::AccountChanged { .. } => reasons::payout::PAYOUT_ACCOUNT_CHANGED,
        PayoutRule::OwnChange { .. } => return ApiError::PermissionDenied(message),
        PayoutRule::BelowMinimum { .. } => reasons::payout::BELOW_PAYOUT_MINIMUM,
        PayoutRule::InsufficientDiamonds { .. } => reasons::payout::INSUFFICIENT_DIAMONDS,
        PayoutRule::AmountTooSmall => reasons::payout::AMOUNT_TOO_SMALL,
        PayoutRule::AmountTooLarge => reasons::payout::AMOUNT_TOO_LARGE,
        PayoutRule::LifetimeLimit => reasons::payout::LIFETIME_LIMIT_REACHED,
        PayoutRule::AlreadySettled | PayoutRule::AlreadySent | PayoutRule::Overflow => {
            return ApiError::Internal(message);
        }
    };
    ApiError::failed_precondition(reason, message)
}

fn creator_not_found(id: &ResourceId) -> ApiError {
    ApiError::not_found("creator", id.as_str())
}

fn balance_missing(id: &ResourceId) -> ApiError {
    ApiError::Internal(format!("creator {id} has no balance row"))
}

/// Loads and locks a creator for a read-modify-write.
async fn locked_creator(conn: &mut Conn, id: &ResourceId) -> Result<Creator, ApiError> {
    if !store::lock_creator(conn, id).await? {
        return Err(creator_not_found(id));
    }
    store::get_creator(conn, id)
        .await?
        .ok_or_else(|| creator_not_found(id))
}

fn event(
    creator: &Creator,
    action: &'static str,
    who: &Who,
    reason: &str,
    detail: String,
    at: UnixMillis,
) -> CreatorEvent {
    CreatorEvent {
        creator_id: creator.id.clone(),
        action,
        actor: who.subject.clone(),
        caller: who.label.clone(),
        reason: reason.to_owned(),
        detail,
        at,
    }
}

/// Releases every HELD payout of `creator` not yet handed to the provider (inside
/// SuspendCreator's transaction, the creator's row locked); returns their ids. Payouts
/// already sent are left to the worker, which asks the provider.
async fn release_unsent_payouts(
    conn: &mut Conn,
    creator: &ResourceId,
    now: UnixMillis,
) -> Result<Vec<String>, ApiError> {
    let mut released = Vec::new();
    for payout in store::unsent_payouts(conn, creator).await? {
        let (settled, entry) = payout.stopped_by_suspension(now).map_err(rule_error)?;
        match store::settle_payout(conn, &settled, &entry, true).await? {
            store::Settled::Yes => released.push(settled.id),
            store::Settled::NotHeld => {}
            store::Settled::HeldShort => {
                return Err(ApiError::Internal(format!(
                    "payout {} is HELD but its creator's held balance is short of it",
                    payout.id
                )));
            }
        }
    }
    Ok(released)
}

#[tonic::async_trait]
impl PayoutService for Payouts {
    async fn register_creator(
        &self,
        request: Request<pb::RegisterCreatorRequest>,
    ) -> Reply<pb::RegisterCreatorResponse> {
        let caller = require_creator(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("RegisterCreator", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let name = v.check("display_name", Name::parse(&req.display_name));
        let (key, id, name) = v
            .finish(|| Some((key?, id?, name?)))
            .map_err(ApiError::from)?;
        let who = Who::of(&caller);
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "RegisterCreator"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let now = UnixMillis::now();
                        let creator = Creator::register(id, name, now);
                        if !store::insert_creator(conn, &creator).await? {
                            return Err(ApiError::AlreadyExists {
                                reason: reasons::payout::CREATOR_EXISTS,
                                message: format!("creator {} is already registered", creator.id),
                            });
                        }
                        store::insert_creator_event(
                            conn,
                            &event(&creator, "REGISTER", &who, "", String::new(), now),
                        )
                        .await?;
                        Ok::<_, ApiError>(pb::RegisterCreatorResponse {
                            creator: Some(creator_to_proto(&creator)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_creator(
        &self,
        request: Request<pb::GetCreatorRequest>,
    ) -> Reply<pb::GetCreatorResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let id = v.finish(|| id).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let creator = store::get_creator(&mut conn, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| creator_not_found(&id))?;
        Ok(Response::new(pb::GetCreatorResponse {
            creator: Some(creator_to_proto(&creator)),
        }))
    }

    async fn set_payout_account(
        &self,
        request: Request<pb::SetPayoutAccountRequest>,
    ) -> Reply<pb::SetPayoutAccountResponse> {
        let caller = require_account_owner(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("SetPayoutAccount", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let reference = v.check(
            "account_reference",
            AccountReference::parse(&req.account_reference),
        );
        let holder = v.check("holder_name", Name::parse(&req.holder_name));
        let (key, id, reference, holder) = v
            .finish(|| Some((key?, id?, reference?, holder?)))
            .map_err(ApiError::from)?;
        let who = Who::of(&caller);
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "SetPayoutAccount"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let creator = locked_creator(conn, &id).await?;
                        let now = UnixMillis::now();
                        let next = creator
                            .with_account(reference, holder, who.label.clone(), now)
                            .map_err(rule_error)?;
                        let detail = next
                            .account
                            .as_ref()
                            .map(|a| format!("{} (version {})", a.reference.as_str(), a.version))
                            .unwrap_or_default();
                        store::update_creator(conn, &next).await?;
                        store::insert_creator_event(
                            conn,
                            &event(&next, "SET_PAYOUT_ACCOUNT", &who, "", detail, now),
                        )
                        .await?;
                        Ok::<_, ApiError>(pb::SetPayoutAccountResponse {
                            creator: Some(creator_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn verify_payout_account(
        &self,
        request: Request<pb::VerifyPayoutAccountRequest>,
    ) -> Reply<pb::VerifyPayoutAccountResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("VerifyPayoutAccount", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let decision = v.check("decision", parse_decision(req.decision));
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
        let reason = v.noted_reason(
            Text::parse_required(&req.reason),
            &req.actor,
            caller.subject(),
        );
        let (key, id, decision, reference, reason) = v
            .finish(|| Some((key?, id?, decision?, reference?, reason?)))
            .map_err(ApiError::from)?;
        let reviewed = ReviewedAccount {
            version: req.account_version,
            reference,
        };
        let who = Who::of(&caller);
        let actor = who.as_actor()?;
        // With authentication off (--insecure-no-auth) every caller is the same nobody:
        // four eyes cannot apply.
        let four_eyes = caller != Caller::unchecked();
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "VerifyPayoutAccount"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let creator = locked_creator(conn, &id).await?;
                        let now = UnixMillis::now();
                        let review = Review {
                            actor,
                            reason: reason.clone(),
                            at: now,
                        };
                        let next = creator
                            .reviewed(decision, &reviewed, review, four_eyes)
                            .map_err(rule_error)?;
                        store::update_creator(conn, &next).await?;
                        let detail = next
                            .account
                            .as_ref()
                            .map(|a| format!("{} (version {})", a.reference.as_str(), a.version))
                            .unwrap_or_default();
                        let action = match decision {
                            Decision::Verify => "VERIFY",
                            Decision::Reject => "REJECT",
                        };
                        store::insert_creator_event(
                            conn,
                            &event(&next, action, &who, reason.as_str(), detail, now),
                        )
                        .await?;
                        Ok::<_, ApiError>(pb::VerifyPayoutAccountResponse {
                            creator: Some(creator_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn suspend_creator(
        &self,
        request: Request<pb::SuspendCreatorRequest>,
    ) -> Reply<pb::SuspendCreatorResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("SuspendCreator", &req);
        let (key, id, reason) = parse_creator_decision(
            &caller,
            &req.idempotency_key,
            &req.creator_id,
            &req.actor,
            &req.reason,
        )?;
        let who = Who::of(&caller);
        let actor = who.as_actor()?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "SuspendCreator"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        // The lock first, the instant after it: whatever took the creator's
                        // lock before (a credit, a payout request, a payout handed to the
                        // provider) happened before the suspension.
                        let creator = locked_creator(conn, &id).await?;
                        let now = UnixMillis::now();
                        let review = Review {
                            actor,
                            reason: reason.clone(),
                            at: now,
                        };
                        let creator = match creator.suspended(review) {
                            None => creator,
                            Some(next) => {
                                store::update_creator(conn, &next).await?;
                                let released = release_unsent_payouts(conn, &next.id, now).await?;
                                let detail = if released.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        "released {} payout(s) not yet sent: {}",
                                        released.len(),
                                        released.join(", ")
                                    )
                                };
                                store::insert_creator_event(
                                    conn,
                                    &event(&next, "SUSPEND", &who, reason.as_str(), detail, now),
                                )
                                .await?;
                                next
                            }
                        };
                        Ok::<_, ApiError>(pb::SuspendCreatorResponse {
                            creator: Some(creator_to_proto(&creator)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn reinstate_creator(
        &self,
        request: Request<pb::ReinstateCreatorRequest>,
    ) -> Reply<pb::ReinstateCreatorResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("ReinstateCreator", &req);
        let (key, id, reason) = parse_creator_decision(
            &caller,
            &req.idempotency_key,
            &req.creator_id,
            &req.actor,
            &req.reason,
        )?;
        let who = Who::of(&caller);
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "ReinstateCreator"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let creator = locked_creator(conn, &id).await?;
                        let now = UnixMillis::now();
                        let creator = match creator.reinstated(now) {
                            None => creator,
                            Some(next) => {
                                store::update_creator(conn, &next).await?;
                                store::insert_creator_event(
                                    conn,
                                    &event(
                                        &next,
                                        "REINSTATE",
                                        &who,
                                        reason.as_str(),
                                        String::new(),
                                        now,
                                    ),
                                )
                                .await?;
                                next
                            }
                        };
                        Ok::<_, ApiError>(pb::ReinstateCreatorResponse {
                            creator: Some(creator_to_proto(&creator)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn credit_diamonds(
        &self,
        request: Request<pb::CreditDiamondsRequest>,
    ) -> Reply<pb::CreditDiamondsResponse> {
        let caller = access::require(&request, &[Role::GiftingService])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("CreditDiamonds", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
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
        let (key, credit) = v
            .finish(|| {
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
            .map_err(ApiError::from)?;
        let scoped = scoped_key(&credit.creator_id, &key)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "CreditDiamonds"),
                &scoped,
                &fingerprint,
                |conn: &mut Conn| credit_once(conn, credit).boxed(),
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_diamond_balance(
        &self,
        request: Request<pb::GetDiamondBalanceRequest>,
    ) -> Reply<pb::GetDiamondBalanceResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let id = v.finish(|| id).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let balance = store::get_balance(&mut conn, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| creator_not_found(&id))?;
        Ok(Response::new(pb::GetDiamondBalanceResponse {
            balance: Some(balance_to_proto(&id, &balance)),
        }))
    }

    async fn list_earnings(
        &self,
        request: Request<pb::ListEarningsRequest>,
    ) -> Reply<pb::ListEarningsResponse> {
        require_creator(&request, &request.get_ref().creator_id)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let stream = v.check("stream_id", optional_id(&req.stream_id));
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let (id, stream, size, cursor) = v
            .finish(|| Some((id?, stream?, size?, cursor?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        if store::get_balance(&mut conn, &id)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(creator_not_found(&id).into());
        }
        let mut credits =
            store::list_earnings(&mut conn, &id, stream.as_ref(), cursor, size.fetch_limit())
                .await
                .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut credits, |c| {
            PageToken::keyset_cursor(c.created_at.0, c.request.operation_id.as_str())
        });
        Ok(Response::new(pb::ListEarningsResponse {
            credits: credits.iter().map(credit_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn request_payout(
        &self,
        request: Request<pb::RequestPayoutRequest>,
    ) -> Reply<pb::RequestPayoutResponse> {
        let caller = require_creator(&request, &request.get_ref().creator_id)?;
        let deadline = incoming_deadline(&request);
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("RequestPayout", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("creator_id", ResourceId::parse(&req.creator_id));
        let diamonds = v.check("diamonds", Diamonds::parse(req.diamonds));
        let (key, id, diamonds) = v
            .finish(|| Some((key?, id?, diamonds?)))
            .map_err(ApiError::from)?;
        // The rate is read before the write transaction: no network call holds a lock. A
        // failure to read it only matters to a new request: a replay answers without it.
        let rate = self.economy.payout_rate(deadline).await;
        let payout_id = format!("po_{}", uuid::Uuid::now_v7().simple());
        let (response, replayed) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "RequestPayout"),
                &scoped_key(&id, &key)?,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let rate = rate?;
                        // Locked, so a suspension is either seen here or sees this payout
                        // (and releases it).
                        let creator = locked_creator(conn, &id).await?;
                        let now = UnixMillis::now();
                        let balance = store::get_balance(conn, &id)
                            .await?
                            .ok_or_else(|| balance_missing(&id))?;
                        let (payout, hold) =
                            Payout::request(payout_id, &creator, &balance, diamonds, &rate, now)
                                .map_err(rule_error)?;
                        // The conditional update in post_entry is what stops concurrent
                        // requests from holding more than is available; on refusal the whole
                        // transaction (payout row included) rolls back.
                        if store::post_entry(conn, &hold).await? == Posted::Refused {
                            let available = store::get_balance(conn, &id)
                                .await?
                                .map_or(0, |b| b.available);
                            return Err(rule_error(PayoutRule::InsufficientDiamonds { available }));
                        }
                        store::insert_payout(conn, &payout).await?;
                        Ok::<_, ApiError>(pb::RequestPayoutResponse {
                            payout: Some(payout_to_proto(&payout)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        if replayed == Replayed::No {
            // Fresh: the payout as recorded, HELD; the worker takes it from here.
            self.wakeup.wake();
            return Ok(Response::new(response));
        }
        // A replay answers with the payout as it is now, not as it was first recorded.
        let recorded = response.payout.unwrap_or_default();
        let mut conn = self.read().await?;
        let current = store::get_payout(&mut conn, &recorded.payout_id)
            .await
            .map_err(ApiError::from)?
            .map(|p| payout_to_proto(&p))
            .unwrap_or(recorded);
        Ok(Response::new(pb::RequestPayoutResponse {
            payout: Some(current),
        }))
    }

    async fn get_payout(
        &self,
        request: Request<pb::GetPayoutRequest>,
    ) -> Reply<pb::GetPayoutResponse> {
        let caller = access::require(&request, &[Role::Admin, Role::Creator, Role::Gateway])?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("payout_id", ResourceId::parse(&req.payout_id));
        let id = v.finish(|| id).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let payout = store::get_payout(&mut conn, id.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("payout", id.as_str()))?;
        check_creator(&caller, &payout.creator_id)?;
        Ok(Response::new(pb::GetPayoutResponse {
            payout: Some(payout_to_proto(&payout)),
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let creator = v.check("creator_id", optional_id(&req.creator_id));
        let state = v.check("state", parse_state_filter(req.state));
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let (creator, state, size, cursor) = v
            .finish(|| Some((creator?, state?, size?, cursor?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        if let Some(id) = &creator
            && store::get_balance(&mut conn, id)
                .await
                .map_err(ApiError::from)?
                .is_none()
        {
            return Err(creator_not_found(id).into());
        }
        let mut payouts = store::list_payouts(
            &mut conn,
            creator.as_ref(),
            state,
            cursor,
            size.fetch_limit(),
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut payouts, |p| {
            PageToken::keyset_cursor(p.created_at.0, &p.id)
        });
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: payouts.iter().map(payout_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_ledger_summary(
        &self,
        request: Request<pb::GetLedgerSummaryRequest>,
    ) -> Reply<pb::GetLedgerSummaryResponse> {
        access::require(&request, &[Role::Admin])?;
        let mut conn = self.read().await?;
        let as_of = UnixMillis::now();
        let summary = store::ledger_summary(&mut conn)
            .await
            .map_err(ApiError::from)?;
        if summary.balance_mismatches != 0 {
            tracing::error!(
                mismatches = summary.balance_mismatches,
                "creator balance rows disagree with their postings"
            );
        }
        Ok(Response::new(pb::GetLedgerSummaryResponse {
            kinds: summary
                .kinds
                .iter()
                .map(|(kind, count, balance)| pb::AccountKindSummary {
                    kind: account_kind_to_proto(*kind) as i32,
                    account_count: *count,
                    balance_diamonds: *balance,
                })
                .collect(),
            total_diamonds: summary.total,
            unbalanced_entry_count: summary.unbalanced_entries,
            negative_balance_count: summary.negative_balances,
            journal_entry_count: summary.entries,
            credit_count: summary.credits,
            credited_diamonds: summary.credited_diamonds,
            as_of_time: Some(to_timestamp(as_of)),
        }))
    }

    async fn list_credits(
        &self,
        request: Request<pb::ListCreditsRequest>,
    ) -> Reply<pb::ListCreditsResponse> {
        access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let ids = if req.operation_ids.len() > LIST_CREDITS_IDS_MAX {
            v.add(
                "operation_ids",
                format!("at most {LIST_CREDITS_IDS_MAX} ids"),
            );
            None
        } else {
            let parsed: Vec<Option<ResourceId>> = req
                .operation_ids
                .iter()
                .enumerate()
                .map(|(i, id)| v.check(&format!("operation_ids[{i}]"), ResourceId::parse(id)))
                .collect();
            parsed.into_iter().collect::<Option<Vec<_>>>()
        };
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
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
        let (ids, size, cursor, window) = v
            .finish(|| Some((ids?, size?, cursor?, window?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        if !ids.is_empty() {
            let mut credits = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(credit) = store::get_credit(&mut conn, id)
                    .await
                    .map_err(ApiError::from)?
                {
                    credits.push(credit);
                }
            }
            credits.sort_by(|a, b| {
                (a.created_at, a.request.operation_id.as_str())
                    .cmp(&(b.created_at, b.request.operation_id.as_str()))
            });
            credits.dedup_by(|a, b| a.request.operation_id == b.request.operation_id);
            return Ok(Response::new(pb::ListCreditsResponse {
                credits: credits.iter().map(credit_to_proto).collect(),
                next_page_token: String::new(),
            }));
        }
        let mut credits = store::list_credits(&mut conn, cursor, window, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut credits, |c| {
            PageToken::keyset_cursor(c.created_at.0, c.request.operation_id.as_str())
        });
        Ok(Response::new(pb::ListCreditsResponse {
            credits: credits.iter().map(credit_to_proto).collect(),
            next_page_token,
        }))
    }
}

/// CreditDiamonds inside its write transaction: at most once per operation id.
async fn credit_once(
    conn: &mut Conn,
    request: CreditRequest,
) -> Result<pb::CreditDiamondsResponse, ApiError> {
    // A retry of a recorded operation answers the original credit, whatever has happened
    // to the creator since; other parameters under the same operation id are refused.
    if let Some(existing) = store::get_credit(conn, &request.operation_id).await? {
        return replay(existing, &request);
    }
    // Locked, so a credit lands wholly before a suspension or is refused by it.
    let creator = if store::lock_creator(conn, &request.creator_id).await? {
        store::get_creator(conn, &request.creator_id).await?
    } else {
        None
    }
    .ok_or_else(|| {
        ApiError::failed_precondition(
            reasons::payout::CREATOR_NOT_FOUND,
            format!(
                "creator {} is not registered: the credit is refused for good",
                request.creator_id
            ),
        )
    })?;
    creator.check_may_receive_credit().map_err(|rule| {
        ApiError::failed_precondition(
            reasons::payout::CREATOR_SUSPENDED,
            format!("{rule}: the credit is refused for good"),
        )
    })?;
    let credit = Credit::new(request.clone(), UnixMillis::now()).map_err(rule_error)?;
    if !store::insert_credit(conn, &credit).await? {
        // A concurrent request with the same operation id committed first.
        let existing = store::get_credit(conn, &request.operation_id)
            .await?
            .ok_or_else(|| ApiError::Aborted {
                reason: reasons::payout::CONCURRENT_CREDIT,
                message: "a concurrent credit with this operation id is in progress; retry".into(),
            })?;
        return replay(existing, &request);
    }
    if let Some(entry) = credit.entry()
        && store::post_entry(conn, &entry).await? == Posted::Refused
    {
        return Err(rule_error(PayoutRule::LifetimeLimit));
    }
    Ok(pb::CreditDiamondsResponse {
        credit: Some(credit_to_proto(&credit)),
    })
}

fn replay(
    existing: Credit,
    request: &CreditRequest,
) -> Result<pb::CreditDiamondsResponse, ApiError> {
    if existing.is_same_request(request) {
        Ok(pb::CreditDiamondsResponse {
            credit: Some(credit_to_proto(&existing)),
        })
    } else {
        Err(ApiError::AlreadyExists {
            reason: reasons::payout::OPERATION_ID_REUSED,
            message: format!(
                "operation {} was already credited with other parameters",
                request.operation_id
            ),
        })
    }
}

// ---- domain → proto ----------------------------------------------------------------

fn creator_to_proto(c: &Creator) -> pb::Creator {
    pb::Creator {
        creator_id: c.id.to_string(),
        display_name: c.display_name.as_str().to_owned(),
        state: if c.is_suspended() {
            pb::CreatorState::Suspended
        } else {
            pb::CreatorState::Active
        } as i32,
        payout_account: c.account.as_ref().map(|a| {
            let review = a.verification.review();
            pb::PayoutAccount {
                account_reference: a.reference.as_str().to_owned(),
                holder_name: a.holder_name.as_str().to_owned(),
                verification_status: match a.verification {
                    Verification::Pending => pb::VerificationStatus::Pending,
                    Verification::Verified(_) => pb::VerificationStatus::Verified,
                    Verification::Rejected(_) => pb::VerificationStatus::Rejected,
                } as i32,
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
        }),
        suspension: c.suspension.as_ref().map(|s| pb::Suspension {
            actor: s.actor.as_str().to_owned(),
            reason: s.reason.as_str().to_owned(),
            suspend_time: Some(to_timestamp(s.at)),
        }),
        create_time: Some(to_timestamp(c.created_at)),
        update_time: Some(to_timestamp(c.updated_at)),
    }
}

fn credit_to_proto(c: &Credit) -> pb::Credit {
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

fn payout_to_proto(p: &Payout) -> pb::Payout {
    pb::Payout {
        payout_id: p.id.clone(),
        creator_id: p.creator_id.to_string(),
        diamonds: p.diamonds.get(),
        amount: Some(to_money(&p.amount)),
        economy_version: p.rate.economy_version,
        payout_per_unit: Some(to_money(&p.rate.per_unit)),
        diamonds_per_payout_unit: p.rate.diamonds_per_unit.get(),
        state: match p.state {
            PayoutState::Held => pb::PayoutState::Held,
            PayoutState::Paid => pb::PayoutState::Paid,
            PayoutState::Released => pb::PayoutState::Released,
        } as i32,
        account_reference: p.account_reference.as_str().to_owned(),
        provider_reference: p.provider_reference.clone(),
        failure_reason: p.failure_reason.clone(),
        create_time: Some(to_timestamp(p.created_at)),
        update_time: Some(to_timestamp(p.updated_at)),
        settle_time: p.settled_at.map(to_timestamp),
        send_time: p.sent_at.map(to_timestamp),
    }
}

fn balance_to_proto(id: &ResourceId, b: &Balance) -> pb::DiamondBalance {
    pb::DiamondBalance {
        creator_id: id.to_string(),
        available_diamonds: b.available,
        held_diamonds: b.held,
        lifetime_earned_diamonds: b.lifetime_earned,
        paid_out_diamonds: b.paid_out,
    }
}

fn account_kind_to_proto(kind: AccountKind) -> pb::AccountKind {
    match kind {
        AccountKind::Creator => pb::AccountKind::Creator,
        AccountKind::CreatorHeld => pb::AccountKind::CreatorHeld,
        AccountKind::GiftIssuance => pb::AccountKind::GiftIssuance,
        AccountKind::PaidOut => pb::AccountKind::PaidOut,
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
