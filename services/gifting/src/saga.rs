//! The saga driver: runs a gift saga's steps against catalog, wallet and payout.
//!
//! A replica drives a saga only while it holds the saga's lease; every write is fenced by
//! it. After each step the outcome is persisted (in the same transaction as the gift event
//! when the saga completes). Operation ids are derived from the saga id, so a step retried
//! after a crash, a timeout or a lease takeover is the same operation downstream and
//! happens once. The recovery loop picks up every PENDING saga whose time has come and
//! whose lease is free or expired: sagas of a process that died resume elsewhere.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{catalog as catalog_pb, payout as payout_pb, wallet as wallet_pb};
use ovation_server::Shutdown;
use ovation_server::peer::Outbound;
use ovation_store::{Db, StoreError};
use ovation_types::UnixMillis;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::domain::{
    Outcome, Quote, Rejection, RetryPolicy, Saga, Status, Step, VelocityLimit, judge, truncate,
};
use crate::hops::{BatchReply, HopBatcher, HopLimits, call_failure, timed};
use crate::quotes::QuoteCache;
use crate::store::{self, LeaseAfter, SagaRow};
use crate::writer::{SagaWriter, Write};

/// Clients of the three services a saga calls.
#[derive(Clone, Debug)]
pub struct Peers {
    pub catalog: CatalogServiceClient<InterceptedService<Channel, Outbound>>,
    pub wallet: WalletServiceClient<InterceptedService<Channel, Outbound>>,
    pub payout: PayoutServiceClient<InterceptedService<Channel, Outbound>>,
}

/// Saga timing and budgets.
#[derive(Clone, Debug)]
pub struct SagaSettings {
    pub retry: RetryPolicy,
    /// How long a replica's claim on a saga lasts without renewal.
    pub lease_ms: i64,
    /// Deadline of one step's call.
    pub step_timeout_ms: u64,
    /// How often the recovery loop looks for sagas to resume.
    pub recovery_interval_ms: u64,
    /// Most sagas one recovery pass resumes.
    pub recovery_batch_max: i64,
    /// How the debits and credits of concurrent sagas are batched.
    pub hops: HopLimits,
    /// How long a quote the catalog gave is used for other sends of the same gift.
    pub quote_cache_ms: u64,
    /// The gift velocity limit new sagas are recorded under; `None`: no limit.
    pub velocity: Option<VelocityLimit>,
}

impl Default for SagaSettings {
    fn default() -> Self {
        SagaSettings {
            retry: RetryPolicy::default(),
            lease_ms: 10_000,
            step_timeout_ms: 5_000,
            recovery_interval_ms: 500,
            recovery_batch_max: 64,
            hops: HopLimits::default(),
            quote_cache_ms: 1_000,
            velocity: VelocityLimit::of_setting(60),
        }
    }
}

/// Why a saga could not be driven now (the saga itself is safe; retry later).
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs sagas.
#[derive(Clone, Debug)]
pub struct SagaEngine {
    pub(crate) db: Db,
    pub(crate) peers: Peers,
    /// This replica's name in leases.
    pub(crate) owner: String,
    pub(crate) settings: SagaSettings,
    /// Bumped after every published gift event, so feed watchers wake at once.
    published: Arc<watch::Sender<u64>>,
    /// Sagas this replica is driving now: one driver per saga per replica (the lease
    /// keeps other replicas out; this keeps a replayed SendGift from starting a second).
    driving: Arc<Mutex<HashSet<String>>>,
    /// Commits this replica's saga writes, many sagas' in one transaction.
    writer: SagaWriter,
    /// The debits of the sagas driven at the moment, sent to the wallet together.
    debits: HopBatcher<wallet_pb::DebitCoinsItem, wallet_pb::Debit>,
    /// Their credits, sent to payout together.
    credits: HopBatcher<payout_pb::CreditDiamondsItem, payout_pb::Credit>,
    quotes: Arc<QuoteCache>,
    pub(crate) shutdown: Shutdown,
}

/// This replica's claim to drive one saga (or one reversal), given back on drop.
pub(crate) struct Driving {
    set: Arc<Mutex<HashSet<String>>>,
    saga_id: String,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.saga_id);
    }
}

impl SagaEngine {
    pub fn new(db: Db, peers: Peers, settings: SagaSettings, shutdown: Shutdown) -> Self {
        let (published, _) = watch::channel(0);
        let velocity = settings.velocity;
        let hop_timeout = Duration::from_millis(settings.step_timeout_ms);
        SagaEngine {
            debits: debit_batcher(peers.wallet.clone(), settings.hops, hop_timeout),
            credits: credit_batcher(peers.payout.clone(), settings.hops, hop_timeout),
            quotes: Arc::new(QuoteCache::new(Duration::from_millis(
                settings.quote_cache_ms,
            ))),
            peers,
            owner: format!(
                "gifting-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            settings,
            published: Arc::new(published),
            driving: Arc::new(Mutex::new(HashSet::new())),
            writer: SagaWriter::start(db.clone(), velocity),
            db,
            shutdown,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn lease_until(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_add(self.settings.lease_ms))
    }

    /// Quotes a new saga from a price the catalog gave a moment ago, if there is one, so it
    /// is recorded at its debit (one saga write and one catalog call fewer).
    pub fn quote_from_cache(&self, saga: &mut Saga) {
        if saga.step != Step::ResolveGift {
            return;
        }
        let now = UnixMillis::now();
        if let Some(quote) = self.quotes.quote(&saga.gift_id, saga.quantity, now) {
            saga.apply(Outcome::Quoted(quote), now, &self.settings.retry, 0.0);
        }
    }

    /// A receiver that changes whenever this replica publishes a gift event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Drives a saga until it is terminal, needs an operator, waits longer than half its
    /// lease for a retry (it lets the lease go and the recovery loop resumes it when due,
    /// so a saga waiting out a peer's outage holds no lease and no task), or another
    /// replica holds it. Returns its state then.
    pub async fn drive(&self, saga_id: &str) -> Result<SagaRow, DriveError> {
        let Some(_driving) = self.start_driving(saga_id) else {
            return self.load(saga_id).await;
        };
        self.drive_loop(saga_id, None).await
    }

    /// Records a new saga under its sender's idempotency key, leased to this replica: `None`
    /// if the sender already used the key (the caller reads the saga recorded under it) or
    /// the velocity limit refused it (then there is none to read). Nothing else happens
    /// before this commits.
    pub async fn record(
        &self,
        saga: Saga,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<SagaRow>, DriveError> {
        let lease_until = self.lease_until(saga.created_at);
        let inserted = self
            .writer
            .write(Write::Insert {
                saga: saga.clone(),
                key: key.to_owned(),
                fingerprint: fingerprint.to_owned(),
                owner: self.owner.clone(),
                lease_until,
                trace_parent: ovation_telemetry::current_traceparent().unwrap_or_default(),
            })
            .await?;
        Ok(inserted.then(|| SagaRow {
            saga,
            idempotency_key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            lease_owner: self.owner.clone(),
            lease_expires_at: lease_until,
            reversal: None,
        }))
    }

    /// Drives a saga [`SagaEngine::record`] just recorded: its lease is this replica's and
    /// `row` is what was written, so the first step runs without claiming or reading it.
    pub async fn drive_recorded(&self, row: SagaRow) -> Result<SagaRow, DriveError> {
        let saga_id = row.saga.saga_id.clone();
        let Some(_driving) = self.start_driving(&saga_id) else {
            return self.load(&saga_id).await;
        };
        self.drive_loop(&saga_id, Some(row)).await
    }

    /// The saga loop. `held` is the saga as this replica last wrote it, fenced by its lease
    /// and renewing it: while that lease has at least half its term left, the next step runs
    /// on it directly; otherwise the lease is claimed again and the saga re-read, as on the
    /// first pass of a saga resumed by recovery.
    async fn drive_loop(
        &self,
        saga_id: &str,
        mut held: Option<SagaRow>,
    ) -> Result<SagaRow, DriveError> {
        loop {
            let now = UnixMillis::now();
            let fresh = held.take().filter(|row| {
                row.lease_owner == self.owner
                    && row.saga.status == Status::Pending
                    && row.lease_expires_at.0.saturating_sub(now.0) >= self.settings.lease_ms / 2
            });
            let row = match fresh {
                Some(row) => row,
                None => {
                    let claimed = {
                        let _turn = self.db.write_turn().await;
                        let mut conn = self.db.conn().await?;
                        store::claim_lease(
                            &mut conn,
                            saga_id,
                            &self.owner,
                            self.lease_until(now),
                            now,
                        )
                        .await?
                    };
                    let row = self.load(saga_id).await?;
                    if !claimed || row.saga.status != Status::Pending {
                        return Ok(row);
                    }
                    row
                }
            };
            if self.shutdown.is_triggered() {
                self.release(saga_id).await?;
                return self.load(saga_id).await;
            }
            let wait = row.saga.next_attempt_at.0 - now.0;
            if wait > 0 {
                if wait > self.settings.lease_ms / 2 {
                    // A long backoff: let the lease go, recovery resumes it when due.
                    self.release(saga_id).await?;
                    return self.load(saga_id).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = self.shutdown.wait() => {}
                }
                held = Some(row);
                continue;
            }
            let SagaRow {
                mut saga,
                idempotency_key,
                fingerprint,
                lease_owner,
                lease_expires_at,
                reversal,
            } = row;
            let step = saga.step;
            let started = std::time::Instant::now();
            let outcome = self.run_step(&saga).await;
            ovation_metrics::global().saga_step(step_name(step), started.elapsed().as_secs_f64());
            let now = UnixMillis::now();
            saga.apply(outcome, now, &self.settings.retry, rand::random::<f64>());
            if saga.may_go_on_unsaved(step, now) {
                // Recovery would redo the step from the last save, and that replay is
                // answered as the original (see `Saga::may_go_on_unsaved`).
                held = Some(SagaRow {
                    saga,
                    idempotency_key,
                    fingerprint,
                    lease_owner,
                    lease_expires_at,
                    reversal,
                });
                continue;
            }
            // The outcome, the lease's renewal (or release, once the saga stops here) and,
            // for a completed saga, its gift event: one transaction (shared with other
            // sagas' writes of the moment), fenced by the lease.
            let lease = if saga.status == Status::Pending {
                LeaseAfter::Renew(self.lease_until(now))
            } else {
                LeaseAfter::Release
            };
            let saved = self
                .writer
                .write(Write::Save {
                    saga: saga.clone(),
                    owner: self.owner.clone(),
                    lease,
                })
                .await?;
            if !saved {
                // Fenced out: another replica took the saga over (its work stands), or an
                // operator freed the lease. Claim it again, as a resumed saga: that fails
                // if someone else holds it.
                continue;
            }
            if let Some(outcome) = outcome_name(saga.status) {
                ovation_metrics::global().saga_outcome(outcome);
            }
            let (lease_owner, lease_expires_at) = match lease {
                LeaseAfter::Renew(until) => (self.owner.clone(), until),
                LeaseAfter::Release => (String::new(), UnixMillis(0)),
            };
            let row = SagaRow {
                saga,
                idempotency_key,
                fingerprint,
                lease_owner,
                lease_expires_at,
                reversal,
            };
            match row.saga.status {
                Status::Pending => held = Some(row),
                Status::Completed => {
                    self.published.send_modify(|n| *n = n.wrapping_add(1));
                    return Ok(row);
                }
                Status::NeedsOperator => {
                    tracing::error!(saga_id, step = ?row.saga.step, error = %row.saga.last_error,
                        "saga handed to an operator: no retry fixes it (ListStuckSagas, RetrySaga)");
                    return Ok(row);
                }
                Status::Rejected | Status::Compensated => return Ok(row),
            }
        }
    }

    pub(crate) fn start_driving(&self, saga_id: &str) -> Option<Driving> {
        let mut set = self.driving.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(saga_id.to_owned()).then(|| Driving {
            set: self.driving.clone(),
            saga_id: saga_id.to_owned(),
        })
    }

    pub async fn load(&self, saga_id: &str) -> Result<SagaRow, DriveError> {
        let mut conn = self.db.conn().await?;
        store::get_saga(&mut conn, saga_id).await?.ok_or_else(|| {
            DriveError::Store(StoreError::Config(format!("saga {saga_id} vanished")))
        })
    }

    async fn release(&self, saga_id: &str) -> Result<(), DriveError> {
        let _turn = self.db.write_turn().await;
        let mut conn = self.db.conn().await?;
        store::release_lease(&mut conn, saga_id, &self.owner).await?;
        Ok(())
    }

    pub(crate) fn timed<T>(&self, message: T) -> tonic::Request<T> {
        timed(
            message,
            Duration::from_millis(self.settings.step_timeout_ms),
        )
    }

    /// Runs the saga's current step once and classifies its answer.
    async fn run_step(&self, saga: &Saga) -> Outcome {
        match saga.step {
            Step::ResolveGift => {
                if let Some(quote) =
                    self.quotes
                        .quote(&saga.gift_id, saga.quantity, UnixMillis::now())
                {
                    return Outcome::Quoted(quote);
                }
                let reply = self
                    .peers
                    .catalog
                    .clone()
                    .quote_gift(self.timed(catalog_pb::QuoteGiftRequest {
                        gift_id: saga.gift_id.clone(),
                        quantity: saga.quantity,
                    }))
                    .await;
                match reply {
                    Ok(r) => {
                        let q = r.into_inner();
                        self.quotes.remember(&saga.gift_id, &q);
                        let unit = q.gift.as_ref().map_or(0, |g| g.coin_price);
                        Outcome::Quoted(Quote {
                            gift_version: q.gift.as_ref().map_or(0, |g| g.version),
                            unit_price_coins: unit,
                            total_coins: q.total_coins,
                            creator_share_bps: q.creator_share_bps,
                            economy_version: q.economy_version,
                        })
                    }
                    Err(s) => judge(saga.step, &call_failure("catalog", &s)),
                }
            }
            Step::DebitCoins => {
                let Some(quote) = saga.quote else {
                    return Outcome::Refused {
                        reason: Rejection::Other,
                        detail: "no quote recorded".into(),
                    };
                };
                let item = wallet_pb::DebitCoinsItem {
                    operation_id: saga.operation_id().to_owned(),
                    user_id: saga.sender_user_id.clone(),
                    coins: quote.total_coins,
                    saga_id: saga.saga_id.clone(),
                    note: format!(
                        "gift {} x{} to {} in {}",
                        saga.gift_id, saga.quantity, saga.creator_id, saga.stream_id
                    ),
                };
                match self.debits.call(item).await {
                    Ok(debit) => Outcome::Debited {
                        available_after: debit.available_coins_after,
                    },
                    Err(failure) => judge(saga.step, &failure),
                }
            }
            Step::CreditDiamonds => {
                let Some(quote) = saga.quote else {
                    return Outcome::Refused {
                        reason: Rejection::Other,
                        detail: "no quote recorded".into(),
                    };
                };
                let item = payout_pb::CreditDiamondsItem {
                    operation_id: saga.operation_id().to_owned(),
                    creator_id: saga.creator_id.clone(),
                    coins: quote.total_coins,
                    creator_share_bps: quote.creator_share_bps,
                    sender_user_id: saga.sender_user_id.clone(),
                    stream_id: saga.stream_id.clone(),
                    gift_id: saga.gift_id.clone(),
                    gift_version: quote.gift_version,
                };
                match self.credits.call(item).await {
                    Ok(credit) => Outcome::Credited {
                        diamonds: credit.diamonds,
                    },
                    Err(failure) => judge(saga.step, &failure),
                }
            }
            Step::RefundCoins => {
                let reply = self
                    .peers
                    .wallet
                    .clone()
                    .refund_coins(self.timed(wallet_pb::RefundCoinsRequest {
                        idempotency_key: format!("{}.refund", saga.saga_id),
                        operation_id: saga.refund_operation_id(),
                        debit_operation_id: saga.operation_id().to_owned(),
                        coins: None,
                        note: format!("compensation: {}", truncate(&saga.rejection_detail, 400)),
                    }))
                    .await;
                match reply {
                    Ok(r) => Outcome::Refunded {
                        available_after: r
                            .into_inner()
                            .refund
                            .map_or(0, |f| f.available_coins_after),
                    },
                    Err(s) => judge(saga.step, &call_failure("wallet", &s)),
                }
            }
            Step::Done => Outcome::Refused {
                reason: Rejection::Other,
                detail: "saga has no step left".into(),
            },
        }
    }

    /// One recovery pass: resume every due saga whose lease is free or expired.
    pub async fn recover_once(&self) -> Result<usize, DriveError> {
        let due = {
            let mut conn = self.db.conn().await?;
            store::due_sagas(
                &mut conn,
                UnixMillis::now(),
                self.settings.recovery_batch_max,
            )
            .await?
        };
        let count = due.len();
        let mut running = tokio::task::JoinSet::new();
        for (saga_id, trace_parent) in due {
            let engine = self.clone();
            // The resumed saga continues the trace of the request that started it.
            let span = tracing::info_span!("resume_saga", saga_id = %saga_id);
            ovation_telemetry::continue_trace(&span, &trace_parent);
            running.spawn(tracing::Instrument::instrument(
                async move {
                    if let Err(e) = engine.drive(&saga_id).await {
                        tracing::warn!(saga_id, error = %e, "resuming saga failed; will retry");
                    }
                },
                span,
            ));
        }
        while running.join_next().await.is_some() {}
        Ok(count + self.recover_reversals_once().await?)
    }

    /// Resumes sagas until shutdown: at start (sagas of a process that died) and then
    /// every `recovery_interval_ms`.
    pub async fn run_recovery(self) {
        let interval = Duration::from_millis(self.settings.recovery_interval_ms.max(10));
        let mut pruned_at = UnixMillis(0);
        loop {
            match self.recover_once().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(resumed = n, "recovery pass"),
                Err(e) => tracing::warn!(error = %e, "recovery pass failed; will retry"),
            }
            let now = UnixMillis::now();
            if now.0.saturating_sub(pruned_at.0) >= VELOCITY_PRUNE_INTERVAL_MS {
                pruned_at = now;
                if let Err(e) = self.prune_velocity_locks().await {
                    tracing::warn!(error = %e, "pruning velocity rows failed; will retry");
                }
            }
            tokio::select! {
                _ = self.shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// How often idle velocity rows are pruned.
const VELOCITY_PRUNE_INTERVAL_MS: i64 = 60_000;
/// Most velocity rows one prune deletes.
const VELOCITY_PRUNE_BATCH_MAX: i64 = 1_000;

impl SagaEngine {
    /// Forgets the velocity rows of pairs idle for longer than the window (bounded; the
    /// next pass takes the rest). Their next record makes them again.
    async fn prune_velocity_locks(&self) -> Result<(), DriveError> {
        let before = VelocityLimit::window_after(UnixMillis::now());
        let _turn = self.db.write_turn().await;
        let mut conn = self.db.conn().await?;
        store::prune_velocity_locks(&mut conn, before, VELOCITY_PRUNE_BATCH_MAX).await?;
        Ok(())
    }
}

/// The saga backlog into the gauges: sagas in flight, the oldest one's age, sagas
/// needing an operator.
pub async fn refresh_backlog_gauges(db: Db) -> Result<(), StoreError> {
    let backlog = {
        let mut conn = db.conn().await?;
        store::saga_backlog(&mut conn).await?
    };
    let now = UnixMillis::now();
    let oldest_age_ms = backlog
        .oldest_in_flight_created_at
        .map_or(0, |created| now.0.saturating_sub(created.0));
    let metrics = ovation_metrics::global();
    metrics.set_sagas_in_flight(backlog.in_flight, oldest_age_ms);
    metrics.set_sagas_needing_operator(backlog.needing_operator);
    Ok(())
}

/// The `step` label of a saga step.
fn step_name(step: Step) -> &'static str {
    match step {
        Step::ResolveGift => "resolve_gift",
        Step::DebitCoins => "debit_coins",
        Step::CreditDiamonds => "credit_diamonds",
        Step::RefundCoins => "refund_coins",
        Step::Done => "done",
    }
}

/// The `status` label of a saga outcome; `None` while it is still pending.
fn outcome_name(status: Status) -> Option<&'static str> {
    match status {
        Status::Pending => None,
        Status::Completed => Some("completed"),
        Status::Rejected => Some("rejected"),
        Status::Compensated => Some("compensated"),
        Status::NeedsOperator => Some("needs_operator"),
    }
}

type WalletClient = WalletServiceClient<InterceptedService<Channel, Outbound>>;
type PayoutClient = PayoutServiceClient<InterceptedService<Channel, Outbound>>;

/// The wallet's batcher: `DebitCoinsBatch`, or, from a wallet that predates it (a rolling
/// upgrade), each item as its own `DebitCoins` under the key the saga always used.
fn debit_batcher(
    wallet: WalletClient,
    limits: HopLimits,
    timeout: Duration,
) -> HopBatcher<wallet_pb::DebitCoinsItem, wallet_pb::Debit> {
    HopBatcher::start(
        "wallet",
        "debit",
        limits,
        Arc::new(move |items: Vec<wallet_pb::DebitCoinsItem>| {
            let mut wallet = wallet.clone();
            Box::pin(async move {
                let request = wallet_pb::DebitCoinsBatchRequest {
                    items: items.clone(),
                };
                match wallet.debit_coins_batch(timed(request, timeout)).await {
                    Ok(reply) => Ok(reply
                        .into_inner()
                        .results
                        .into_iter()
                        .map(|r| match r.outcome {
                            Some(wallet_pb::debit_coins_result::Outcome::Debit(d)) => Ok(d),
                            Some(wallet_pb::debit_coins_result::Outcome::Error(e)) => Err(e),
                            None => Err(empty_result()),
                        })
                        .collect()),
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        one_by_one(items, |item| {
                            let mut wallet = wallet.clone();
                            async move {
                                let request = wallet_pb::DebitCoinsRequest {
                                    idempotency_key: format!("{}.debit", item.saga_id),
                                    operation_id: item.operation_id,
                                    user_id: item.user_id,
                                    coins: item.coins,
                                    saga_id: item.saga_id,
                                    note: item.note,
                                };
                                let reply = wallet.debit_coins(timed(request, timeout)).await?;
                                reply.into_inner().debit.ok_or_else(empty_reply)
                            }
                        })
                        .await
                    }
                    Err(status) => Err(status),
                }
            })
        }),
    )
}

/// Payout's batcher: `CreditDiamondsBatch`, or `CreditDiamonds` per item from a payout
/// service that predates it.
fn credit_batcher(
    payout: PayoutClient,
    limits: HopLimits,
    timeout: Duration,
) -> HopBatcher<payout_pb::CreditDiamondsItem, payout_pb::Credit> {
    HopBatcher::start(
        "payout",
        "credit",
        limits,
        Arc::new(move |items: Vec<payout_pb::CreditDiamondsItem>| {
            let mut payout = payout.clone();
            Box::pin(async move {
                let request = payout_pb::CreditDiamondsBatchRequest {
                    items: items.clone(),
                };
                match payout.credit_diamonds_batch(timed(request, timeout)).await {
                    Ok(reply) => Ok(reply
                        .into_inner()
                        .results
                        .into_iter()
                        .map(|r| match r.outcome {
                            Some(payout_pb::credit_diamonds_result::Outcome::Credit(c)) => Ok(c),
                            Some(payout_pb::credit_diamonds_result::Outcome::Error(e)) => Err(e),
                            None => Err(empty_result()),
                        })
                        .collect()),
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        one_by_one(items, |item| {
                            let mut payout = payout.clone();
                            async move {
                                let request = payout_pb::CreditDiamondsRequest {
                                    idempotency_key: format!("{}.credit", item.operation_id),
                                    operation_id: item.operation_id,
                                    creator_id: item.creator_id,
                                    coins: item.coins,
                                    creator_share_bps: item.creator_share_bps,
                                    sender_user_id: item.sender_user_id,
                                    stream_id: item.stream_id,
                                    gift_id: item.gift_id,
                                    gift_version: item.gift_version,
                                };
                                let reply = payout.credit_diamonds(timed(request, timeout)).await?;
                                reply.into_inner().credit.ok_or_else(empty_reply)
                            }
                        })
                        .await
                    }
                    Err(status) => Err(status),
                }
            })
        }),
    )
}

/// Each item as its own call, all at once; a call's failure is its item's.
async fn one_by_one<I, R, F, Fut>(items: Vec<I>, call: F) -> BatchReply<R>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<R, tonic::Status>>,
{
    let answers = futures::future::join_all(items.into_iter().map(call)).await;
    Ok(answers
        .into_iter()
        .map(|answer| answer.map_err(|status| item_error_of(&status)))
        .collect())
}

/// A single call's failure as the batch item error it stands for.
fn item_error_of(status: &tonic::Status) -> ovation_proto::common::ItemError {
    use tonic_types::StatusExt;
    if std::error::Error::source(status).is_some() {
        // No answer at all: keep it transient, as the whole batch's failure would be.
        return ovation_proto::common::ItemError {
            code: i32::from(tonic::Code::Unavailable),
            reason: String::new(),
            message: status.message().to_owned(),
        };
    }
    ovation_proto::common::ItemError {
        code: i32::from(status.code()),
        reason: status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        message: status.message().to_owned(),
    }
}

fn empty_result() -> ovation_proto::common::ItemError {
    ovation_proto::common::ItemError {
        code: i32::from(tonic::Code::Internal),
        reason: String::new(),
        message: "the peer answered an item with neither a result nor an error".into(),
    }
}

fn empty_reply() -> tonic::Status {
    tonic::Status::internal("the peer answered without the posted record")
}
