//! The payout worker: a background task (started by `run`, stopped by the shutdown
//! signal) that drives HELD payouts through the [`PayoutProvider`] to PAID or RELEASED.
//!
//! How:
//! - It claims the HELD payout due soonest with a **lease** (`lease_owner`,
//!   `lease_until_ms`), so two replicas never call the provider for one payout at the
//!   same time; a lease outlives the provider deadline, and a crashed worker's leases
//!   expire, so its payouts resume elsewhere or after a restart.
//! - Before calling the provider it **hands the payout over** in one transaction that
//!   locks the creator's row first (as SuspendCreator does) and re-reads the creator: an
//!   active creator's payout is recorded as sent (`sent_at_ms`, first time only) and
//!   paid; a suspended creator's payout that was never sent is released there and then,
//!   without a call; one already sent (it may be paid) is not released on a guess: the
//!   provider is asked to cancel it, and its answer settles it (PAID if it had paid,
//!   RELEASED if cancelled). SuspendCreator releases the unsent ones itself; the check
//!   here catches any that a suspension did not see, and orders the send against it:
//!   a payout is either sent before the suspension (and then settled by the provider)
//!   or released. A creator who owes clawed-back diamonds (debt) is treated exactly like
//!   a suspended one, and diamonds a release returns to them settle the debt at once;
//!   whether the creator was in debt at the hand-over is recorded (`sent_in_debt`, 0 by
//!   construction).
//! - It calls the provider with the payout id (the provider's idempotency key) under a
//!   deadline. A definite answer settles the payout in one transaction (creator row
//!   locked first): state compare-and-set on HELD, plus the capture (PAID) or release
//!   (FAILED → RELEASED) journal entry `settle:<payout>`, whose primary key refuses a
//!   second settlement.
//! - No definite answer (timeout, transient error, our database failing) is never a
//!   refusal: the payout stays HELD and is retried with exponential backoff and jitter.
//!   After `retry_budget` attempts it is flagged for an operator (`attention`, logged as an
//!   error) and keeps being retried at the longest backoff: releasing a hold the provider
//!   may have paid would pay the creator twice.
//! - On shutdown it stops claiming, gives calls in flight `drain` to finish, then abandons
//!   them and drops its leases, so a restart resumes them at once; the provider's
//!   idempotency makes the repeated call safe.
//!
//! Bounds: at most `concurrency` provider calls in flight; every call, wait and retry has
//! a limit (see [`WorkerConfig`]).

use std::sync::Arc;
use std::time::Duration;

use ovation_server::Shutdown;
use ovation_store::{Db, StoreError};
use ovation_types::{Clock, UnixMillis};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::domain::{
    NextStep, Payout, PayoutState, RELEASED_BY_DEBT, RELEASED_BY_SUSPENSION, Settlement,
};
use crate::operations::ledger;
use crate::provider::{PayoutOrder, PayoutProvider, ProviderOutcome};
use crate::store::{self, Settled};

/// How the worker paces itself. Every field is a bound.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// How often it looks for due payouts when nothing wakes it.
    pub poll_interval: Duration,
    /// Longest one provider call may take before it counts as "no definite answer".
    pub provider_timeout: Duration,
    /// Most provider calls in flight.
    pub concurrency: usize,
    /// Attempts after which a payout is flagged for an operator.
    pub retry_budget: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Longest shutdown waits for provider calls in flight.
    pub drain: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            poll_interval: Duration::from_millis(1_000),
            provider_timeout: Duration::from_millis(10_000),
            concurrency: 4,
            retry_budget: 20,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_millis(60_000),
            drain: Duration::from_millis(5_000),
        }
    }
}

/// Extra life a lease has beyond the provider deadline (settling takes a transaction).
const LEASE_MARGIN: Duration = Duration::from_secs(10);

impl WorkerConfig {
    /// Settings for fast tests: polls every 50 ms, retries after 20–200 ms, drains for
    /// 200 ms, so a test sees a payout settle (or be retried) at once. For the test
    /// harnesses that run the payout service in-process; never for a deployment (it would
    /// poll the database and retry the provider far too eagerly).
    pub const FAST_TESTS: WorkerConfig = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        provider_timeout: Duration::from_secs(10),
        concurrency: 4,
        retry_budget: 20,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        drain: Duration::from_millis(200),
    };

    fn lease(&self) -> Duration {
        self.provider_timeout + LEASE_MARGIN
    }
}

/// The delay before attempt `attempts + 1`: `base × 2^(attempts−1)`, capped at `max`,
/// scaled by `jitter` ∈ [0.5, 1] ("equal jitter"), so replicas do not retry in lockstep.
pub fn backoff(config: &WorkerConfig, attempts: i64, jitter: f64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let raw = config
        .backoff_base
        .saturating_mul(2u32.saturating_pow(exponent));
    raw.min(config.backoff_max)
        .mul_f64(jitter.clamp(0.5, 1.0))
        .max(Duration::from_millis(1))
}

/// Wakes the worker when a payout is requested, so it need not wait for its next poll.
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Starts the worker; it stops (draining as documented above) when `shutdown` trips.
/// `clock` is the service's: payouts are due by the time they were recorded with.
pub fn spawn(
    db: Db,
    provider: Arc<dyn PayoutProvider>,
    config: WorkerConfig,
    wakeup: Wakeup,
    shutdown: Shutdown,
    clock: Clock,
) -> JoinHandle<()> {
    tokio::spawn(work(db, provider, config, wakeup, shutdown, clock))
}

async fn work(
    db: Db,
    provider: Arc<dyn PayoutProvider>,
    config: WorkerConfig,
    wakeup: Wakeup,
    shutdown: Shutdown,
    clock: Clock,
) {
    let owner = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let concurrency = config.concurrency.max(1);
    let mut in_flight: JoinSet<()> = JoinSet::new();
    tracing::info!(%owner, concurrency, "payout worker started");
    loop {
        while in_flight.len() < concurrency && !shutdown.is_triggered() {
            let now = clock.now();
            let lease_until = after(now, config.lease());
            let claimed = async {
                let mut conn = db.pool().acquire().await?;
                store::claim_due_payout(&mut conn, &owner, now, lease_until).await
            }
            .await;
            match claimed {
                Ok(Some((payout, attempts))) => {
                    let span =
                        tracing::info_span!("payout_attempt", payout_id = %payout.id, attempts);
                    in_flight.spawn(
                        attempt(
                            db.clone(),
                            provider.clone(),
                            config.clone(),
                            owner.clone(),
                            payout,
                            attempts,
                            clock.clone(),
                        )
                        .instrument(span),
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "payout worker cannot claim payouts; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = wakeup.0.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
    // Drain: let calls in flight finish within the bound, then abandon them.
    let drained = tokio::time::timeout(config.drain, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            abandoned = in_flight.len(),
            "payout provider calls still in flight at shutdown were abandoned; they resume on \
             the next start (the provider call is idempotent by payout id)"
        );
        in_flight.shutdown().await;
    }
    let released = async {
        let mut conn = db.pool().acquire().await?;
        store::release_leases(&mut conn, &owner).await
    }
    .await;
    match released {
        Ok(n) => tracing::info!(%owner, released_leases = n, "payout worker stopped"),
        Err(e) => tracing::warn!(%owner, error = %e,
            "payout worker stopped without dropping its leases; they expire on their own"),
    }
}

fn after(now: UnixMillis, d: Duration) -> UnixMillis {
    UnixMillis(
        now.0
            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// What the handover decided.
enum Handover {
    /// Call the provider to pay it.
    Pay,
    /// Ask the provider to cancel it (its creator was suspended after it was sent).
    Cancel,
    /// Nothing to call: released here (suspended, never sent), or no longer ours.
    Done,
}

/// Hands `payout` over (see the module documentation), in one transaction that locks
/// the creator's row first, so a suspension is either seen here or sees the payout sent.
async fn hand_over(db: &Db, payout: &Payout, owner: &str) -> Result<Handover, StoreError> {
    let mut tx = db.begin_write().await?;
    let creator = if store::lock_creator(&mut tx, &payout.creator_id).await? {
        store::get_creator(&mut tx, &payout.creator_id).await?
    } else {
        None
    };
    let (Some(creator), Some(current)) = (
        creator,
        store::get_leased_payout(&mut tx, &payout.id, owner).await?,
    ) else {
        // Settled meanwhile (or taken over by another worker): nothing to do.
        tx.rollback().await?;
        return Ok(Handover::Done);
    };
    let debt = store::get_balance(&mut tx, &payout.creator_id)
        .await?
        .map_or(0, |b| b.debt);
    let now = UnixMillis::now();
    let step = match current.next_step(&creator, debt) {
        NextStep::Pay => {
            if !store::mark_sent(&mut tx, &current.id, owner, now, debt > 0).await? {
                tx.rollback().await?;
                return Ok(Handover::Done);
            }
            Handover::Pay
        }
        NextStep::Cancel => Handover::Cancel,
        NextStep::Release => {
            let reason = if creator.is_suspended() {
                RELEASED_BY_SUSPENSION
            } else {
                RELEASED_BY_DEBT
            };
            let (released, entry) = current
                .stopped(reason, now)
                .map_err(|e| broken(format!("payout {}: {e}", current.id)))?;
            match store::settle_payout(&mut tx, &released, &entry, PayoutState::Held, true).await? {
                Settled::Yes => {
                    settle_debt(&mut tx, &current).await?;
                    tracing::info!(payout_id = %current.id, creator_id = %creator.id,
                        "payout of a suspended creator, or one in debt, released before it was \
                         sent");
                }
                Settled::NotHeld => {}
                Settled::HeldShort => return Err(held_short(&current)),
            }
            Handover::Done
        }
    };
    tx.commit().await?;
    Ok(step)
}

/// Diamonds a release returned to `payout`'s creator settle their clawback debt first
/// (the creator's row is locked).
async fn settle_debt(
    conn: &mut ovation_store::db::Conn,
    payout: &Payout,
) -> Result<(), StoreError> {
    let cause = format!("payout:{}", payout.id);
    ledger::settle_debt(conn, &payout.creator_id, &cause)
        .await
        .map_err(|e| match e {
            crate::operations::PayoutError::Store(e) => e,
            other => broken(other.to_string()),
        })?;
    Ok(())
}

fn broken(message: String) -> StoreError {
    StoreError::Database(ovation_store::sqlx::Error::Protocol(message))
}

fn held_short(payout: &Payout) -> StoreError {
    broken(format!(
        "payout {} is HELD but its creator's held balance is short of {} diamonds",
        payout.id,
        payout.diamonds.get()
    ))
}

/// One attempt at `payout`; without a definite answer it stays HELD and is retried.
async fn attempt(
    db: Db,
    provider: Arc<dyn PayoutProvider>,
    config: WorkerConfig,
    owner: String,
    payout: Payout,
    attempts: i64,
    clock: Clock,
) {
    let failure = match drive(&db, provider.as_ref(), &config, &owner, &payout).await {
        Ok(()) => return,
        Err(failure) => failure,
    };
    let attention = attempts >= i64::from(config.retry_budget);
    let delay = backoff(&config, attempts, rand::random::<f64>() * 0.5 + 0.5);
    if attention {
        tracing::error!(payout_id = %payout.id, attempts, error = %failure,
            "payout has no definite answer after its retry budget; it stays HELD and is retried \
             every {} ms: operator attention needed", delay.as_millis());
    } else {
        tracing::warn!(payout_id = %payout.id, attempts, error = %failure,
            retry_in_ms = delay.as_millis() as u64, "payout attempt without a definite answer");
    }
    let next = after(clock.now(), delay);
    let scheduled = async {
        let mut conn = db.pool().acquire().await?;
        store::schedule_retry(&mut conn, &payout.id, &owner, next, &failure, attention).await
    }
    .await;
    if let Err(e) = scheduled {
        tracing::warn!(payout_id = %payout.id, error = %e,
            "cannot schedule the payout's retry; its lease expires and it is retried then");
    }
}

/// Hands `payout` over, calls the provider (pay, or cancel if its creator was suspended
/// after it was sent) and records a definite answer. `Err`: what kept the answer from
/// being definite.
async fn drive(
    db: &Db,
    provider: &dyn PayoutProvider,
    config: &WorkerConfig,
    owner: &str,
    payout: &Payout,
) -> Result<(), String> {
    let order = PayoutOrder {
        payout_id: payout.id.clone(),
        creator_id: payout.creator_id.to_string(),
        amount: payout.amount,
        account_reference: payout.account_reference.as_str().to_owned(),
    };
    let handover = hand_over(db, payout, owner)
        .await
        .map_err(|e| format!("handing the payout over failed: {e}"))?;
    let call = match handover {
        Handover::Done => return Ok(()),
        Handover::Pay => provider.pay(&order),
        Handover::Cancel => {
            tracing::info!(payout_id = %payout.id,
                "creator suspended or in debt after the payout was sent: asking the provider to \
                 cancel it");
            provider.cancel(&order)
        }
    };
    let outcome = tokio::time::timeout(config.provider_timeout, call)
        .await
        .map_err(|_| {
            format!(
                "the payout provider did not answer within {} ms",
                config.provider_timeout.as_millis()
            )
        })?
        .map_err(|e| e.to_string())?;
    let settlement = match outcome {
        ProviderOutcome::Paid { provider_reference } => Settlement::Paid { provider_reference },
        ProviderOutcome::Declined { reason } => Settlement::Failed { reason },
    };
    settle(db, payout, settlement)
        .await
        .map_err(|e| format!("recording the provider's answer failed: {e}"))
}

/// Records the provider's definite answer: the payout's new state and the capture or
/// release entry, in one transaction (the creator's row locked first, as everywhere).
async fn settle(db: &Db, payout: &Payout, settlement: Settlement) -> Result<(), StoreError> {
    let (settled, entry) = match payout.settle(settlement, UnixMillis::now()) {
        Ok(done) => done,
        // Claimed payouts are HELD; a settled one has nothing left to do.
        Err(_) => return Ok(()),
    };
    let mut tx = db.begin_write().await?;
    store::lock_creator(&mut tx, &payout.creator_id).await?;
    match store::settle_payout(&mut tx, &settled, &entry, PayoutState::Held, false).await? {
        Settled::Yes if settled.state == PayoutState::Released => {
            settle_debt(&mut tx, &settled).await?;
        }
        Settled::Yes => {}
        Settled::NotHeld => {
            // Settled meanwhile by another replica whose lease we outlived: its answer
            // stands.
            tx.rollback().await?;
            return Ok(());
        }
        Settled::HeldShort => {
            tx.rollback().await?;
            return Err(held_short(payout));
        }
    }
    tx.commit().await?;
    tracing::info!(payout_id = %settled.id, state = settled.state.as_str(), "payout settled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let config = WorkerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            ..WorkerConfig::default()
        };
        assert_eq!(backoff(&config, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&config, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(&config, 4, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(&config, 5, 1.0), Duration::from_millis(1_000));
        assert_eq!(
            backoff(&config, i64::MAX, 1.0),
            Duration::from_millis(1_000)
        );
        assert_eq!(backoff(&config, 2, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(&config, 2, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(&config, 0, 1.0), Duration::from_millis(100));
    }
}
