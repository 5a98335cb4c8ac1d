//! The gRPC layer, kept thin: who may call (first line of every RPC), parse into domain
//! values, run the operation inside the idempotency-key transaction, map the outcome.
//! Proto types stop here.
//!
//! Authorization: a user's own account (viewer/creator, or the gateway acting for them)
//! or an admin for account reads and spending limits; only the user buys coins; the
//! `service:gifting` identity debits, refunds and holds; admins mark minors, reverse
//! purchases and read the audit views.

use futures::FutureExt;
use ovation_auth::Role;
use ovation_proto::reasons;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::wallet_service_server::WalletService;
use ovation_server::edge::{money, time_window, to_timestamp};
use ovation_server::{ApiError, IdempotentCall, access};
use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{
    Coins, CurrencyCode, IdempotencyKey, PageSize, PageToken, ResourceId, Text, UnixMillis,
    Violations,
};
use tonic::{Request, Response, Status};

use crate::accounts::{self, OpenAccountCmd, SetLimitsCmd, SetMinorCmd};
use crate::audit;
use crate::domain::{
    self, AccountKind, AgeRule, Caps, DEBIT_IDS_MAX, HOLD_TTL_MS_DEFAULT, HOLD_TTL_MS_MAX,
    HOLD_TTL_MS_MIN, HoldState, LimitsStatus, PurchaseState, Reason, Refusal, VerifiedAge,
};
use crate::ledger::{self, CaptureCmd, DebitCmd, RefundCmd, ReserveCmd, ReverseCmd, WalletError};
use crate::purchases::{PurchaseCmd, Purchases};
use crate::store::{
    AccountRow, DebitRow, EntryRow, HoldRow, LedgerSummary, PurchaseRow, RefundRow,
};

type Reply<T> = Result<Response<T>, Status>;

/// Who may spend, refund and hold coins: the gift saga.
const SPENDERS: &[Role] = &[Role::GiftingService];
const ADMINS: &[Role] = &[Role::Admin];

/// The wallet's gRPC service.
#[derive(Clone, Debug)]
pub struct Wallet {
    db: Db,
    purchases: Purchases,
    cooling_off_ms: i64,
    age_rule: AgeRule,
}

impl Wallet {
    pub fn new(db: Db, purchases: Purchases, cooling_off_ms: i64, age_rule: AgeRule) -> Self {
        Wallet {
            db,
            purchases,
            cooling_off_ms,
            age_rule,
        }
    }
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::Store(e) => e.into(),
            WalletError::Refused(r) => {
                let message = r.to_string();
                match r {
                    Refusal::Minor(_) => {
                        ApiError::failed_precondition(reasons::wallet::MINOR_ACCOUNT, message)
                    }
                    Refusal::AgeNotVerified(_) => {
                        ApiError::failed_precondition(reasons::wallet::AGE_NOT_VERIFIED, message)
                    }
                    Refusal::InDebt { .. } => {
                        ApiError::failed_precondition(reasons::wallet::ACCOUNT_IN_DEBT, message)
                    }
                    Refusal::InsufficientCoins { .. } => {
                        ApiError::failed_precondition(reasons::wallet::INSUFFICIENT_COINS, message)
                    }
                    Refusal::SpendCap { .. } => ApiError::ResourceExhausted {
                        reason: reasons::wallet::SPEND_CAP_EXCEEDED,
                        message,
                    },
                    Refusal::PurchaseCap { .. } => ApiError::ResourceExhausted {
                        reason: reasons::wallet::PURCHASE_CAP_EXCEEDED,
                        message,
                    },
                }
            }
            WalletError::NotFound { kind, id } => ApiError::not_found(kind, id),
            e @ WalletError::AccountExists(_) => ApiError::AlreadyExists {
                reason: reasons::wallet::ACCOUNT_EXISTS,
                message: e.to_string(),
            },
            WalletError::Conflict(message) => ApiError::AlreadyExists {
                reason: reasons::wallet::OPERATION_ID_REUSED,
                message,
            },
            WalletError::Unavailable(message) => ApiError::Unavailable { message },
            WalletError::WrongState { reason, message } => {
                ApiError::failed_precondition(reason, message)
            }
        }
    }
}

/// The age the caller's token vouches for, about account `user`: only the user's own
/// token (or the gateway's for them) speaks for the account holder; an operator's or a
/// service's token describes someone else.
fn verified_age_of(caller: &ovation_auth::Caller, user: &str) -> Option<VerifiedAge> {
    if !caller.is_user(user) {
        return None;
    }
    caller.verified_age().map(|age| match age {
        ovation_auth::VerifiedAge::Adult => VerifiedAge::Adult,
        ovation_auth::VerifiedAge::Minor => VerifiedAge::Minor,
    })
}

fn optional_id(raw: &str) -> Result<Option<ResourceId>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        ResourceId::parse(raw).map(Some)
    }
}

fn cap(raw: Option<i64>) -> Result<Option<i64>, String> {
    match raw {
        Some(c) if !(0..=ovation_types::limits::AMOUNT_MAX).contains(&c) => Err(format!(
            "must be between 0 and {}",
            ovation_types::limits::AMOUNT_MAX
        )),
        other => Ok(other),
    }
}

/// ListPurchases' `state`: unset means every state.
fn purchase_state_filter(raw: i32) -> Result<Option<PurchaseState>, String> {
    let state =
        pb::PurchaseState::try_from(raw).map_err(|_| "is not a purchase state".to_string())?;
    Ok(match state {
        pb::PurchaseState::Unspecified => None,
        pb::PurchaseState::Pending => Some(PurchaseState::Pending),
        pb::PurchaseState::Completed => Some(PurchaseState::Completed),
        pb::PurchaseState::Declined => Some(PurchaseState::Declined),
        pb::PurchaseState::Reversed => Some(PurchaseState::Reversed),
    })
}

/// An optional `coins` field: unset means "all of it".
fn optional_coins(v: &mut Violations, raw: Option<i64>) -> Option<Option<Coins>> {
    match raw {
        Some(c) => v.check("coins", Coins::parse(c)).map(Some),
        None => Some(None),
    }
}

/// A hold's time to live: the default when unset, else 1 s..=1 h.
fn hold_ttl_ms(ttl: Option<&prost_types::Duration>) -> Result<i64, String> {
    let Some(d) = ttl else {
        return Ok(HOLD_TTL_MS_DEFAULT);
    };
    let ms = d
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(d.nanos / 1_000_000));
    if (HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&ms) && d.nanos >= 0 {
        Ok(ms)
    } else {
        Err("must be between 1 s and 1 h".to_string())
    }
}

/// The complete new set of caps (required; an unset cap means none).
fn spending_caps(v: &mut Violations, caps: Option<&pb::SpendingCaps>) -> Option<Caps> {
    let Some(c) = caps else {
        v.add(
            "caps",
            "is required: the complete new set of caps (an unset cap means none)",
        );
        return None;
    };
    let daily_spend = v.check("caps.daily_spend_coins", cap(c.daily_spend_coins));
    let monthly_spend = v.check("caps.monthly_spend_coins", cap(c.monthly_spend_coins));
    let daily_purchase = v.check("caps.daily_purchase_coins", cap(c.daily_purchase_coins));
    let monthly_purchase = v.check("caps.monthly_purchase_coins", cap(c.monthly_purchase_coins));
    Some(Caps {
        daily_spend: daily_spend?,
        monthly_spend: monthly_spend?,
        daily_purchase: daily_purchase?,
        monthly_purchase: monthly_purchase?,
    })
}

#[tonic::async_trait]
impl WalletService for Wallet {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Reply<pb::CreateAccountResponse> {
        let caller = access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CreateAccount", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let (key, user) = v.finish(|| Some((key?, user?))).map_err(ApiError::from)?;
        let verified_age = verified_age_of(&caller, user.as_str());
        let cmd = OpenAccountCmd {
            user_id: user,
            minor: req.minor,
            verified_age,
        };
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let account = accounts::open(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::CreateAccountResponse {
                        account: Some(account_to_proto(&account)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Reply<pb::GetAccountResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let user = ResourceId::parse(&request.get_ref().user_id)
            .map_err(|e| ApiError::invalid("user_id", e))?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let account = accounts::account(&mut conn, &user)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_to_proto(&account)),
        }))
    }

    async fn set_account_minor(
        &self,
        request: Request<pb::SetAccountMinorRequest>,
    ) -> Reply<pb::SetAccountMinorResponse> {
        let caller = access::require(&request, ADMINS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "SetAccountMinor", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let reason = v.noted_reason(
            Text::parse_required(&req.reason),
            &req.actor,
            caller.subject(),
        );
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    SetMinorCmd {
                        user_id: user?,
                        minor: req.minor,
                        // The actor of record is the caller; the request's actor is only a note.
                        actor: caller.subject().to_owned(),
                        reason: reason?,
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let account = accounts::set_minor(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::SetAccountMinorResponse {
                        account: Some(account_to_proto(&account)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Reply<pb::GetBalanceResponse> {
        access::require_user(
            &request,
            &request.get_ref().user_id,
            &[Role::Admin, Role::GiftingService],
        )?;
        let user = ResourceId::parse(&request.get_ref().user_id)
            .map_err(|e| ApiError::invalid("user_id", e))?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let account = accounts::account(&mut conn, &user)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetBalanceResponse {
            balance: Some(balance_to_proto(&account)),
        }))
    }

    async fn purchase_coins(
        &self,
        request: Request<pb::PurchaseCoinsRequest>,
    ) -> Reply<pb::PurchaseCoinsResponse> {
        // Only the user (or the gateway for them) buys: an admin cannot charge a card.
        let caller = access::require_user(&request, &request.get_ref().user_id, &[])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "PurchaseCoins", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let package = v.check("package_id", ResourceId::parse(&req.package_id));
        let currency = v.check("currency_code", CurrencyCode::parse(&req.currency_code));
        let token = v.check(
            "payment_token",
            if req.payment_token.is_empty() || req.payment_token.len() > 255 {
                Err("is required, at most 255 characters".to_string())
            } else {
                Ok(req.payment_token.clone())
            },
        );
        let expected = match &req.expected_price {
            Some(m) => money(&mut v, "expected_price", Some(m)).map(Some),
            None => Some(None),
        };
        let verified_age = verified_age_of(&caller, &req.user_id);
        let cmd = v
            .finish(|| {
                Some(PurchaseCmd {
                    idempotency_key: key?,
                    fingerprint: call.fingerprint().as_str().to_owned(),
                    user_id: user?,
                    package_id: package?,
                    currency: currency?,
                    payment_token: token?,
                    expected_price: expected?,
                    verified_age,
                })
            })
            .map_err(ApiError::from)?;
        let purchase = self.purchases.purchase(cmd).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::PurchaseCoinsResponse {
            purchase: Some(purchase_to_proto(&purchase)),
        }))
    }

    async fn get_purchase(
        &self,
        request: Request<pb::GetPurchaseRequest>,
    ) -> Reply<pb::GetPurchaseResponse> {
        let caller = access::caller(&request)?;
        let id = ResourceId::parse(&request.get_ref().purchase_id)
            .map_err(|e| ApiError::invalid("purchase_id", e))?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let purchase = ledger::purchase(&mut conn, &id)
            .await
            .map_err(ApiError::from)?;
        // Someone else's purchase is as invisible as a missing one.
        if !(caller.is_user(purchase.user_id.as_str()) || caller.has(Role::Admin)) {
            return Err(ApiError::not_found("purchase", id.as_str()).into());
        }
        Ok(Response::new(pb::GetPurchaseResponse {
            purchase: Some(purchase_to_proto(&purchase)),
        }))
    }

    async fn list_purchases(
        &self,
        request: Request<pb::ListPurchasesRequest>,
    ) -> Reply<pb::ListPurchasesResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let state = v.check("state", purchase_state_filter(req.state));
        let (user, size, cursor, state) = v
            .finish(|| Some((user?, size?, cursor?, state?)))
            .map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows = accounts::purchases(&mut conn, &user, state, cursor, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |p| {
            PageToken::keyset_cursor(p.created_at.0, p.purchase_id.as_str())
        });
        Ok(Response::new(pb::ListPurchasesResponse {
            purchases: rows.iter().map(purchase_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn reverse_purchase(
        &self,
        request: Request<pb::ReversePurchaseRequest>,
    ) -> Reply<pb::ReversePurchaseResponse> {
        let caller = access::require(&request, ADMINS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "ReversePurchase", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("purchase_id", ResourceId::parse(&req.purchase_id));
        let reason = v.noted_reason(
            Text::parse_required(&req.reason),
            &req.actor,
            caller.subject(),
        );
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    ReverseCmd {
                        purchase_id: id?,
                        // The actor of record is the caller; the request's actor is only a note.
                        actor: caller.subject().to_owned(),
                        reason: reason?,
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let purchase = ledger::reverse_purchase(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReversePurchaseResponse {
                        purchase: Some(purchase_to_proto(&purchase)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn debit_coins(
        &self,
        request: Request<pb::DebitCoinsRequest>,
    ) -> Reply<pb::DebitCoinsResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "DebitCoins", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let coins = v.check("coins", Coins::parse(req.coins));
        let saga = v.check("saga_id", optional_id(&req.saga_id));
        let note = v.check("note", Text::parse(&req.note));
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    DebitCmd {
                        operation_id: op?,
                        user_id: user?,
                        coins: coins?,
                        saga_id: saga?,
                        note: note?,
                        actor: caller.subject().to_owned(),
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let age_rule = self.age_rule;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let debit = ledger::debit(conn, &cmd, age_rule, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::DebitCoinsResponse {
                        debit: Some(debit_to_proto(&debit)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn refund_coins(
        &self,
        request: Request<pb::RefundCoinsRequest>,
    ) -> Reply<pb::RefundCoinsResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "RefundCoins", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
        let debit = v.check(
            "debit_operation_id",
            ResourceId::parse(&req.debit_operation_id),
        );
        let coins = optional_coins(&mut v, req.coins);
        let note = v.check("note", Text::parse(&req.note));
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    RefundCmd {
                        operation_id: op?,
                        debit_operation_id: debit?,
                        coins: coins?,
                        note: note?,
                        actor: caller.subject().to_owned(),
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let refund = ledger::refund(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::RefundCoinsResponse {
                        refund: Some(refund_to_proto(&refund)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn reserve_coins(
        &self,
        request: Request<pb::ReserveCoinsRequest>,
    ) -> Reply<pb::ReserveCoinsResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "ReserveCoins", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let coins = v.check("coins", Coins::parse(req.coins));
        let ttl = v.check("ttl", hold_ttl_ms(req.ttl.as_ref()));
        let saga = v.check("saga_id", optional_id(&req.saga_id));
        let note = v.check("note", Text::parse(&req.note));
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    ReserveCmd {
                        operation_id: op?,
                        user_id: user?,
                        coins: coins?,
                        ttl_ms: ttl?,
                        saga_id: saga?,
                        note: note?,
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let age_rule = self.age_rule;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let hold = ledger::reserve(conn, &cmd, age_rule, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReserveCoinsResponse {
                        hold: Some(hold_to_proto(&hold)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn capture_hold(
        &self,
        request: Request<pb::CaptureHoldRequest>,
    ) -> Reply<pb::CaptureHoldResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CaptureHold", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
        let coins = optional_coins(&mut v, req.coins);
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    CaptureCmd {
                        operation_id: op?,
                        coins: coins?,
                        actor: caller.subject().to_owned(),
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let (hold, debit) = ledger::capture(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::CaptureHoldResponse {
                        hold: Some(hold_to_proto(&hold)),
                        debit: Some(debit_to_proto(&debit)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Reply<pb::ReleaseHoldResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "ReleaseHold", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
        let (key, op) = v.finish(|| Some((key?, op?))).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let hold = ledger::release(conn, &op, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReleaseHoldResponse {
                        hold: Some(hold_to_proto(&hold)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_hold(&self, request: Request<pb::GetHoldRequest>) -> Reply<pb::GetHoldResponse> {
        access::require(&request, &[Role::GiftingService, Role::Admin])?;
        let op = ResourceId::parse(&request.get_ref().operation_id)
            .map_err(|e| ApiError::invalid("operation_id", e))?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let hold = ledger::hold(&mut conn, &op).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::GetHoldResponse {
            hold: Some(hold_to_proto(&hold)),
        }))
    }

    async fn set_spending_limits(
        &self,
        request: Request<pb::SetSpendingLimitsRequest>,
    ) -> Reply<pb::SetSpendingLimitsResponse> {
        let caller = access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "SetSpendingLimits", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let reason = v.noted_reason(Text::parse(&req.reason), &req.actor, caller.subject());
        let caps = spending_caps(&mut v, req.caps.as_ref());
        let (key, cmd) = v
            .finish(|| {
                Some((
                    key?,
                    SetLimitsCmd {
                        user_id: user?,
                        caps: caps?,
                        // The actor of record is the caller; the request's actor is only a note.
                        actor: caller.subject().to_owned(),
                        reason: reason?,
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let cooling_off_ms = self.cooling_off_ms;
        let response = call
            .run(&self.db, &key, |conn: &mut Conn| {
                async move {
                    let status =
                        accounts::set_limits(conn, &cmd, cooling_off_ms, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::SetSpendingLimitsResponse {
                        limits: Some(limits_to_proto(&status)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_spending_limits(
        &self,
        request: Request<pb::GetSpendingLimitsRequest>,
    ) -> Reply<pb::GetSpendingLimitsResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let user = ResourceId::parse(&request.get_ref().user_id)
            .map_err(|e| ApiError::invalid("user_id", e))?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let status = accounts::limits(&mut conn, &user, UnixMillis::now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetSpendingLimitsResponse {
            limits: Some(limits_to_proto(&status)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Reply<pb::ListTransactionsResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let user = v.check("user_id", ResourceId::parse(&req.user_id));
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let before = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.cursor_i64()),
        );
        let (user, size, before) = v
            .finish(|| Some((user?, size?, before?)))
            .map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows = accounts::transactions(&mut conn, &user, before, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |e| e.user_seq.to_string());
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: rows.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_ledger_summary(
        &self,
        request: Request<pb::GetLedgerSummaryRequest>,
    ) -> Reply<pb::GetLedgerSummaryResponse> {
        access::require(&request, ADMINS)?;
        let summary = audit::ledger_summary(&self.db)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(ledger_summary_to_proto(
            &summary,
            UnixMillis::now(),
        )))
    }

    async fn list_debits(
        &self,
        request: Request<pb::ListDebitsRequest>,
    ) -> Reply<pb::ListDebitsResponse> {
        access::require(&request, ADMINS)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.operation_ids.len() > DEBIT_IDS_MAX {
            v.add("operation_ids", format!("at most {DEBIT_IDS_MAX} ids"));
        }
        if !req.operation_ids.is_empty() && (req.page_size != 0 || !req.page_token.is_empty()) {
            v.add("page_size", "must be unset when operation_ids are given");
        }
        if !req.operation_ids.is_empty() && (req.start_time.is_some() || req.end_time.is_some()) {
            v.add("start_time", "must be unset when operation_ids are given");
        }
        let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
        let ids: Vec<Option<ResourceId>> = req
            .operation_ids
            .iter()
            .enumerate()
            .take(DEBIT_IDS_MAX)
            .map(|(i, id)| v.check(&format!("operation_ids[{i}]"), ResourceId::parse(id)))
            .collect();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let (ids, size, cursor, range) = v
            .finish(|| {
                Some((
                    ids.into_iter().collect::<Option<Vec<_>>>()?,
                    size?,
                    cursor?,
                    window?,
                ))
            })
            .map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        if !ids.is_empty() {
            let debits = audit::debits_by_id(&mut conn, &ids)
                .await
                .map_err(ApiError::from)?;
            return Ok(Response::new(pb::ListDebitsResponse {
                debits: debits.iter().map(debit_to_proto).collect(),
                next_page_token: String::new(),
            }));
        }
        let mut rows = audit::debits(&mut conn, cursor, range, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |d| {
            PageToken::keyset_cursor(d.created_at.0, d.operation_id.as_str())
        });
        Ok(Response::new(pb::ListDebitsResponse {
            debits: rows.iter().map(debit_to_proto).collect(),
            next_page_token,
        }))
    }
}

fn balance_to_proto(a: &AccountRow) -> pb::Balance {
    pb::Balance {
        user_id: a.user_id.as_str().to_owned(),
        posted_coins: a.balance.posted,
        held_coins: a.balance.held,
        available_coins: a.balance.available(),
        debt_coins: a.balance.debt,
    }
}

fn account_to_proto(a: &AccountRow) -> pb::Account {
    pb::Account {
        user_id: a.user_id.as_str().to_owned(),
        minor: a.age.minor,
        adult_verified: a.age.adult_verified,
        balance: Some(balance_to_proto(a)),
        create_time: Some(to_timestamp(a.created_at)),
        update_time: Some(to_timestamp(a.updated_at)),
    }
}

fn purchase_to_proto(p: &PurchaseRow) -> pb::Purchase {
    pb::Purchase {
        purchase_id: p.purchase_id.as_str().to_owned(),
        user_id: p.user_id.as_str().to_owned(),
        package_id: p.package_id.as_str().to_owned(),
        package_version: p.package_version,
        price: Some(ovation_proto::common::Money {
            currency_code: p.currency_code.as_str().to_owned(),
            amount_minor: p.amount_minor,
        }),
        package_coins: p.package_coins.get(),
        bonus_coins: p.bonus_coins,
        coins_credited: p.package_coins.get() + p.bonus_coins,
        promotion_id: p.promotion_id.clone(),
        promotion_version: p.promotion_version,
        state: pb::PurchaseState::from(p.state).into(),
        decline_reason: p.decline_reason.clone(),
        provider_reference: p.provider_reference.clone(),
        reversal: p.reversed_at.map(|at| pb::PurchaseReversal {
            actor: p.reversal_actor.clone(),
            reason: p.reversal_reason.clone(),
            clawed_back_coins: p.reversal_clawed_back,
            debt_coins: p.reversal_debt,
            reverse_time: Some(to_timestamp(at)),
        }),
        create_time: Some(to_timestamp(p.created_at)),
        update_time: Some(to_timestamp(p.updated_at)),
    }
}

/// An optional id as the contract has it: "" when there is none.
fn id_or_empty(id: Option<&ResourceId>) -> String {
    id.map_or_else(String::new, |id| id.as_str().to_owned())
}

fn debit_to_proto(d: &DebitRow) -> pb::Debit {
    pb::Debit {
        operation_id: d.operation_id.as_str().to_owned(),
        user_id: d.user_id.as_str().to_owned(),
        coins: d.coins.get(),
        saga_id: id_or_empty(d.saga_id.as_ref()),
        note: d.note.as_str().to_owned(),
        from_hold: d.from_hold,
        available_coins_after: d.available_after,
        refunded_coins: d.refunded_coins,
        refund_operation_id: id_or_empty(d.refund_operation_id.as_ref()),
        create_time: Some(to_timestamp(d.created_at)),
        refund_time: d.refunded_at.map(to_timestamp),
    }
}

fn refund_to_proto(r: &RefundRow) -> pb::Refund {
    pb::Refund {
        operation_id: r.operation_id.as_str().to_owned(),
        debit_operation_id: r.debit_operation_id.as_str().to_owned(),
        user_id: r.user_id.as_str().to_owned(),
        coins: r.coins.get(),
        note: r.note.as_str().to_owned(),
        available_coins_after: r.available_after,
        create_time: Some(to_timestamp(r.created_at)),
    }
}

fn hold_to_proto(h: &HoldRow) -> pb::Hold {
    pb::Hold {
        operation_id: h.operation_id.as_str().to_owned(),
        user_id: h.user_id.as_str().to_owned(),
        coins: h.coins.get(),
        state: pb::HoldState::from(h.state).into(),
        captured_coins: h.captured_coins,
        saga_id: id_or_empty(h.saga_id.as_ref()),
        note: h.note.as_str().to_owned(),
        expire_time: Some(to_timestamp(h.expire_at)),
        create_time: Some(to_timestamp(h.created_at)),
        update_time: Some(to_timestamp(h.updated_at)),
    }
}

fn entry_to_proto(e: &EntryRow) -> pb::Transaction {
    pb::Transaction {
        transaction_id: e.entry_id.clone(),
        user_id: e.user_id.as_str().to_owned(),
        reason: pb::TransactionReason::from(e.reason).into(),
        coins: e.delta,
        posted_coins_after: e.posted_after,
        purchase_id: id_or_empty(e.purchase_id.as_ref()),
        operation_id: id_or_empty(e.operation_id.as_ref()),
        saga_id: id_or_empty(e.saga_id.as_ref()),
        actor: e.actor.clone(),
        note: e.note.clone(),
        create_time: Some(to_timestamp(e.created_at)),
    }
}

fn ledger_summary_to_proto(
    summary: &LedgerSummary,
    as_of: UnixMillis,
) -> pb::GetLedgerSummaryResponse {
    pb::GetLedgerSummaryResponse {
        kinds: summary
            .kinds
            .iter()
            .map(
                |&(kind, account_count, balance_coins)| pb::AccountKindSummary {
                    kind: pb::AccountKind::from(kind).into(),
                    account_count,
                    balance_coins,
                },
            )
            .collect(),
        total_coins: summary.total,
        unbalanced_entry_count: summary.unbalanced_entries + summary.balance_mismatches,
        negative_balance_count: summary.negative_balances,
        journal_entry_count: summary.entries,
        total_debt_coins: summary.total_debt,
        as_of_time: Some(to_timestamp(as_of)),
    }
}

impl From<PurchaseState> for pb::PurchaseState {
    fn from(state: PurchaseState) -> Self {
        match state {
            PurchaseState::Pending => pb::PurchaseState::Pending,
            PurchaseState::Completed => pb::PurchaseState::Completed,
            PurchaseState::Declined => pb::PurchaseState::Declined,
            PurchaseState::Reversed => pb::PurchaseState::Reversed,
        }
    }
}

impl From<HoldState> for pb::HoldState {
    fn from(state: HoldState) -> Self {
        match state {
            HoldState::Active => pb::HoldState::Active,
            HoldState::Captured => pb::HoldState::Captured,
            HoldState::Released => pb::HoldState::Released,
            HoldState::Expired => pb::HoldState::Expired,
        }
    }
}

impl From<Reason> for pb::TransactionReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Purchase => pb::TransactionReason::Purchase,
            Reason::PromotionBonus => pb::TransactionReason::PromotionBonus,
            Reason::GiftDebit => pb::TransactionReason::GiftDebit,
            Reason::HoldCapture => pb::TransactionReason::HoldCapture,
            Reason::GiftRefund => pb::TransactionReason::GiftRefund,
            Reason::PurchaseReversal => pb::TransactionReason::PurchaseReversal,
            Reason::DebtSettlement => pb::TransactionReason::DebtSettlement,
        }
    }
}

impl From<AccountKind> for pb::AccountKind {
    fn from(kind: AccountKind) -> Self {
        match kind {
            AccountKind::User => pb::AccountKind::User,
            AccountKind::Issuance => pb::AccountKind::Issuance,
            AccountKind::Promotion => pb::AccountKind::Promotion,
            AccountKind::GiftSink => pb::AccountKind::GiftSink,
            AccountKind::Adjustment => pb::AccountKind::Adjustment,
        }
    }
}

fn caps_to_proto(c: &Caps) -> pb::SpendingCaps {
    pb::SpendingCaps {
        daily_spend_coins: c.daily_spend,
        monthly_spend_coins: c.monthly_spend,
        daily_purchase_coins: c.daily_purchase,
        monthly_purchase_coins: c.monthly_purchase,
    }
}

fn limits_to_proto(status: &LimitsStatus) -> pb::SpendingLimits {
    let limits = &status.limits;
    pb::SpendingLimits {
        user_id: status.user_id.as_str().to_owned(),
        effective: Some(caps_to_proto(&limits.effective)),
        pending: limits.pending.map(|(c, _)| caps_to_proto(&c)),
        pending_effective_time: limits.pending.map(|(_, at)| to_timestamp(at)),
        usage: Some(pb::SpendingUsage {
            spent_today_coins: status.spent.today,
            spent_this_month_coins: status.spent.this_month,
            purchased_today_coins: status.bought.today,
            purchased_this_month_coins: status.bought.this_month,
            day_reset_time: Some(to_timestamp(domain::day_window(status.at).1)),
            month_reset_time: Some(to_timestamp(domain::month_window(status.at).1)),
        }),
        updated_by: limits.updated_by.clone(),
        update_time: limits.updated_at.map(to_timestamp),
    }
}
