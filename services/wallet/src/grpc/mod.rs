//! The gRPC edge, kept thin: who may call (first line of every RPC), [`parse`] into a
//! domain command, run the operation (inside the idempotency-key transaction for a
//! mutation), [`to_proto`] the outcome. Proto types stop here; the rules are in
//! `accounts`, `ledger`, `purchases` and `audit`.
//!
//! Authorization: a user's own account (viewer/creator, or the gateway acting for them)
//! or an admin for account reads and spending limits; only the user buys coins; the
//! `service:gifting` identity debits, refunds and holds; admins mark minors, reverse
//! purchases and read the audit views.

pub mod parse;
pub mod to_proto;

use futures::FutureExt;
use ovation_auth::Role;
use ovation_proto::reasons;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::wallet_service_server::WalletService;
use ovation_server::error::check_batch_len;
use ovation_server::{ApiError, IdempotentCall, access, edge};
use ovation_store::Db;
use ovation_types::{PageToken, UnixMillis};
use tonic::{Request, Response, Status};

use crate::domain::{AgeRule, Refusal};
use crate::ledger::{self, DebitCmd, WalletError};
use crate::purchases::Purchases;
use crate::{accounts, audit};

use self::parse::{
    DebitsQuery, parse_capture_hold, parse_create_account, parse_debit_coins, parse_debit_item,
    parse_get_account, parse_get_balance, parse_get_hold, parse_get_purchase,
    parse_get_spending_limits, parse_list_clawback_orders, parse_list_debits, parse_list_purchases,
    parse_list_transactions, parse_purchase_coins, parse_refund_coins, parse_release_hold,
    parse_reserve_coins, parse_reverse_purchase, parse_set_account_minor,
    parse_set_spending_limits,
};

type Reply<T> = Result<Response<T>, Status>;

/// Who may spend, refund and hold coins: the gift saga.
const SPENDERS: &[Role] = &[Role::GiftingService];
const ADMINS: &[Role] = &[Role::Admin];

/// The wallet's gRPC service.
#[derive(Clone, Debug)]
pub struct WalletApi {
    db: Db,
    purchases: Purchases,
    cooling_off_ms: i64,
    age_rule: AgeRule,
}

impl WalletApi {
    pub fn new(db: Db, purchases: Purchases, cooling_off_ms: i64, age_rule: AgeRule) -> Self {
        WalletApi {
            db,
            purchases,
            cooling_off_ms,
            age_rule,
        }
    }
}

/// A refusal or failure of the operations layer as the contract reports it.
fn status(e: WalletError) -> Status {
    ApiError::from(e).into()
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
                    Refusal::Velocity { .. } => ApiError::ResourceExhausted {
                        reason: reasons::common::VELOCITY_LIMIT,
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
            WalletError::AlreadyRedeemed(message) => ApiError::AlreadyExists {
                reason: reasons::wallet::APP_STORE_TRANSACTION_REDEEMED,
                message,
            },
            WalletError::Invalid { field, message } => {
                ApiError::InvalidArgument(vec![ovation_types::Violation {
                    field: field.to_owned(),
                    description: message,
                }])
            }
            WalletError::Unavailable(message) => ApiError::Unavailable { message },
            WalletError::WrongState { reason, message } => {
                ApiError::failed_precondition(reason, message)
            }
            WalletError::Inconsistent(detail) => ApiError::Internal(detail),
        }
    }
}

#[tonic::async_trait]
impl WalletService for WalletApi {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Reply<pb::CreateAccountResponse> {
        let caller = access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let (key, cmd) = parse_create_account(&req, &caller).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "CreateAccount", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let account = accounts::open(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::CreateAccountResponse {
                        account: Some(to_proto::account(&account)),
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
        let user = parse_get_account(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let account = accounts::account(&mut conn, &user).await.map_err(status)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(to_proto::account(&account)),
        }))
    }

    async fn set_account_minor(
        &self,
        request: Request<pb::SetAccountMinorRequest>,
    ) -> Reply<pb::SetAccountMinorResponse> {
        let caller = access::require(&request, ADMINS)?;
        let req = request.into_inner();
        let (key, cmd) = parse_set_account_minor(&req, &caller).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "SetAccountMinor", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let account = accounts::set_minor(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::SetAccountMinorResponse {
                        account: Some(to_proto::account(&account)),
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
        let user = parse_get_balance(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let account = accounts::account(&mut conn, &user).await.map_err(status)?;
        Ok(Response::new(pb::GetBalanceResponse {
            balance: Some(to_proto::balance(&account)),
        }))
    }

    async fn purchase_coins(
        &self,
        request: Request<pb::PurchaseCoinsRequest>,
    ) -> Reply<pb::PurchaseCoinsResponse> {
        // Only the user (or the gateway for them) buys: an admin cannot charge a card.
        let caller = access::require_user(&request, &request.get_ref().user_id, &[])?;
        let req = request.into_inner();
        // The purchase keeps its own record of the key: only the fingerprint is needed.
        let call = IdempotentCall::new(&caller, "PurchaseCoins", &req);
        let cmd =
            parse_purchase_coins(&req, &caller, call.fingerprint()).map_err(ApiError::from)?;
        let purchase = self.purchases.purchase(cmd).await.map_err(status)?;
        Ok(Response::new(pb::PurchaseCoinsResponse {
            purchase: Some(to_proto::purchase(&purchase)),
        }))
    }

    async fn get_purchase(
        &self,
        request: Request<pb::GetPurchaseRequest>,
    ) -> Reply<pb::GetPurchaseResponse> {
        let caller = access::caller(&request)?;
        let id = parse_get_purchase(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let purchase = ledger::purchase(&mut conn, &id).await.map_err(status)?;
        // Someone else's purchase is as invisible as a missing one.
        if !(caller.is_user(purchase.user_id.as_str()) || caller.has(Role::Admin)) {
            return Err(ApiError::not_found("purchase", id.as_str()).into());
        }
        Ok(Response::new(pb::GetPurchaseResponse {
            purchase: Some(to_proto::purchase(&purchase)),
        }))
    }

    async fn list_purchases(
        &self,
        request: Request<pb::ListPurchasesRequest>,
    ) -> Reply<pb::ListPurchasesResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let page = parse_list_purchases(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let limit = page.size.fetch_limit();
        let mut rows =
            accounts::purchases(&mut conn, &page.user_id, page.state, page.before, limit)
                .await
                .map_err(status)?;
        let next_page_token = page.size.cut(&mut rows, |p| {
            PageToken::keyset_cursor(p.created_at.0, p.purchase_id.as_str())
        });
        Ok(Response::new(pb::ListPurchasesResponse {
            purchases: rows.iter().map(to_proto::purchase).collect(),
            next_page_token,
        }))
    }

    async fn reverse_purchase(
        &self,
        request: Request<pb::ReversePurchaseRequest>,
    ) -> Reply<pb::ReversePurchaseResponse> {
        let caller = access::require(&request, ADMINS)?;
        let req = request.into_inner();
        let (key, cmd) = parse_reverse_purchase(&req, &caller).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "ReversePurchase", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let purchase = ledger::reverse_purchase(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReversePurchaseResponse {
                        purchase: Some(to_proto::purchase(&purchase)),
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
        let (key, cmd) = parse_debit_coins(&req, &caller).map_err(ApiError::from)?;
        let age_rule = self.age_rule;
        let call = IdempotentCall::new(&caller, "DebitCoins", &req);
        // A batch of one, on the batch's path, inside the key's transaction.
        let response = ledger::once_more_if_a_twin_won(|| {
            let cmd = cmd.clone();
            call.run(&self.db, &key, |conn| {
                async move {
                    let debit = ledger::debit(conn, &cmd, age_rule, UnixMillis::now()).await?;
                    Ok::<_, WalletError>(pb::DebitCoinsResponse {
                        debit: Some(to_proto::debit(&debit)),
                    })
                }
                .boxed()
            })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(response))
    }

    async fn debit_coins_batch(
        &self,
        request: Request<pb::DebitCoinsBatchRequest>,
    ) -> Reply<pb::DebitCoinsBatchResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        check_batch_len(req.items.len())?;
        let parsed = req
            .items
            .iter()
            .map(|item| parse_debit_item(item, &caller))
            .collect();
        let answers = edge::answer_batch(parsed, async |cmds: Vec<DebitCmd>| {
            let debits = ledger::debit_batch_committed(&self.db, &cmds, self.age_rule)
                .await
                .map_err(ApiError::from)?;
            ovation_server::crash_point::reached("batch_committed");
            Ok(debits)
        })
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| pb::DebitCoinsResult {
                outcome: Some(match answer {
                    Ok(debit) => pb::debit_coins_result::Outcome::Debit(to_proto::debit(&debit)),
                    Err(e) => pb::debit_coins_result::Outcome::Error(e.into()),
                }),
            })
            .collect();
        Ok(Response::new(pb::DebitCoinsBatchResponse { results }))
    }

    async fn refund_coins(
        &self,
        request: Request<pb::RefundCoinsRequest>,
    ) -> Reply<pb::RefundCoinsResponse> {
        let caller = access::require(&request, SPENDERS)?;
        let req = request.into_inner();
        let (key, cmd) = parse_refund_coins(&req, &caller).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "RefundCoins", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let refund = ledger::refund(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::RefundCoinsResponse {
                        refund: Some(to_proto::refund(&refund)),
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
        let (key, cmd) = parse_reserve_coins(&req).map_err(ApiError::from)?;
        let age_rule = self.age_rule;
        let response = IdempotentCall::new(&caller, "ReserveCoins", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let hold = ledger::reserve(conn, &cmd, age_rule, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReserveCoinsResponse {
                        hold: Some(to_proto::hold(&hold)),
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
        let (key, cmd) = parse_capture_hold(&req, &caller).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "CaptureHold", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let (hold, debit) = ledger::capture(conn, &cmd, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::CaptureHoldResponse {
                        hold: Some(to_proto::hold(&hold)),
                        debit: Some(to_proto::debit(&debit)),
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
        let (key, op) = parse_release_hold(&req).map_err(ApiError::from)?;
        let response = IdempotentCall::new(&caller, "ReleaseHold", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let hold = ledger::release(conn, &op, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::ReleaseHoldResponse {
                        hold: Some(to_proto::hold(&hold)),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_hold(&self, request: Request<pb::GetHoldRequest>) -> Reply<pb::GetHoldResponse> {
        access::require(&request, &[Role::GiftingService, Role::Admin])?;
        let op = parse_get_hold(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let hold = ledger::hold(&mut conn, &op).await.map_err(status)?;
        Ok(Response::new(pb::GetHoldResponse {
            hold: Some(to_proto::hold(&hold)),
        }))
    }

    async fn set_spending_limits(
        &self,
        request: Request<pb::SetSpendingLimitsRequest>,
    ) -> Reply<pb::SetSpendingLimitsResponse> {
        let caller = access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let req = request.into_inner();
        let (key, cmd) = parse_set_spending_limits(&req, &caller).map_err(ApiError::from)?;
        let cooling_off_ms = self.cooling_off_ms;
        let response = IdempotentCall::new(&caller, "SetSpendingLimits", &req)
            .run(&self.db, &key, |conn| {
                async move {
                    let now = UnixMillis::now();
                    let limits = accounts::set_limits(conn, &cmd, cooling_off_ms, now).await?;
                    Ok::<_, ApiError>(pb::SetSpendingLimitsResponse {
                        limits: Some(to_proto::limits(&limits)),
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
        let user = parse_get_spending_limits(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let limits = accounts::limits(&mut conn, &user, UnixMillis::now())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetSpendingLimitsResponse {
            limits: Some(to_proto::limits(&limits)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Reply<pb::ListTransactionsResponse> {
        access::require_user(&request, &request.get_ref().user_id, ADMINS)?;
        let page = parse_list_transactions(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let limit = page.size.fetch_limit();
        let mut rows = accounts::transactions(&mut conn, &page.user_id, page.before, limit)
            .await
            .map_err(status)?;
        let next_page_token = page.size.cut(&mut rows, |e| e.user_seq.to_string());
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: rows.iter().map(to_proto::transaction).collect(),
            next_page_token,
        }))
    }

    async fn get_ledger_summary(
        &self,
        request: Request<pb::GetLedgerSummaryRequest>,
    ) -> Reply<pb::GetLedgerSummaryResponse> {
        access::require(&request, ADMINS)?;
        let summary = audit::ledger_summary(&self.db).await.map_err(status)?;
        Ok(Response::new(to_proto::ledger_summary(
            &summary,
            UnixMillis::now(),
        )))
    }

    async fn list_clawback_orders(
        &self,
        request: Request<pb::ListClawbackOrdersRequest>,
    ) -> Reply<pb::ListClawbackOrdersResponse> {
        access::require(&request, ADMINS)?;
        let page = parse_list_clawback_orders(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows = audit::clawback_orders(
            &mut conn,
            page.purchase_id.as_ref(),
            page.state,
            page.after,
            page.size.fetch_limit(),
        )
        .await
        .map_err(status)?;
        let next_page_token = page.size.cut(&mut rows, |o| {
            PageToken::keyset_cursor(o.created_at.0, &o.clawback_id)
        });
        Ok(Response::new(pb::ListClawbackOrdersResponse {
            orders: rows.iter().map(to_proto::clawback_order).collect(),
            next_page_token,
        }))
    }

    async fn list_debits(
        &self,
        request: Request<pb::ListDebitsRequest>,
    ) -> Reply<pb::ListDebitsResponse> {
        access::require(&request, ADMINS)?;
        let query = parse_list_debits(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let (debits, next_page_token) = match query {
            DebitsQuery::Ids(ids) => {
                let debits = audit::debits_by_id(&mut conn, &ids).await.map_err(status)?;
                (debits, String::new())
            }
            DebitsQuery::Page {
                size,
                after,
                window,
            } => {
                let mut rows = audit::debits(&mut conn, after, window, size.fetch_limit())
                    .await
                    .map_err(status)?;
                let token = size.cut(&mut rows, |d| {
                    PageToken::keyset_cursor(d.created_at.0, d.operation_id.as_str())
                });
                (rows, token)
            }
        };
        Ok(Response::new(pb::ListDebitsResponse {
            debits: debits.iter().map(to_proto::debit).collect(),
            next_page_token,
        }))
    }
}
