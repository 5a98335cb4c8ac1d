//! The clawback worker: finishes reversals' attribution walks that one transaction could
//! not (`ledger::attribute_reversals`, bounded) and delivers clawback orders to payout.
//!
//! Delivery (each order, at least once until payout answers; payout applies a clawback id
//! at most once, so a repeat is harmless):
//! 1. A due PENDING order is claimed with a lease (`attempts + 1` by compare-and-set, the
//!    next attempt time moved to the lease's end), so two wallet replicas never deliver
//!    the same order at once and a replica that dies mid-call leaves it to the other
//!    after the lease.
//! 2. payout `ClawbackDiamonds(clawback_id, operation_id, coins, PURCHASE_REVERSAL,
//!    purchase_id, the reversal's reason)`.
//! 3. OK → APPLIED with payout's diamonds and applied coins. NOT_FOUND / CREDIT_NOT_FOUND →
//!    NO_CREDIT if the wallet's debit was refunded (the gift saga compensated: no credit
//!    will ever exist), else retried (the saga may still be crediting). Any other answer
//!    or none → retried with exponential backoff and jitter, the error recorded on the
//!    order. Nothing gives an order up: giving up would leave the diamonds with the
//!    creator. From `alarm_after_attempts` on, every failure is logged as an error for an
//!    operator, and the delay stays at `retry_max_ms`.
//!
//! Shutdown: the worker stops between passes; a delivery in flight when shutdown comes
//! is abandoned, and its lease lets a restart (or another replica) take it up.

use std::time::Duration;

use futures::StreamExt;
use ovation_proto::payout as payout_pb;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::reasons;
use ovation_server::Shutdown;
use ovation_server::peer::Outbound;
use ovation_store::{Db, StoreError};
use ovation_types::UnixMillis;
use rand::Rng;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::domain::ClawbackOrderState;
use crate::ledger::{self, WalletError};
use crate::store::{self, ClawbackOrderRow};

/// payout, as the worker calls it.
pub type PayoutClient = PayoutServiceClient<InterceptedService<Channel, Outbound>>;

/// Timing and budgets of the clawback worker.
#[derive(Clone, Debug)]
pub struct ClawbackSettings {
    /// How often the worker looks for due orders and unfinished attributions.
    pub interval_ms: u64,
    /// First retry delay of a failed delivery; doubles per attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// How long a claimed delivery is the claimer's alone (longer than one call's deadline).
    pub lease_ms: u64,
    /// From this many attempts on, each failure is logged as an error for an operator.
    pub alarm_after_attempts: i64,
}

impl Default for ClawbackSettings {
    fn default() -> Self {
        ClawbackSettings {
            interval_ms: 1_000,
            retry_base_ms: 500,
            retry_max_ms: 300_000,
            lease_ms: 30_000,
            alarm_after_attempts: 20,
        }
    }
}

/// Most orders one pass delivers; most buyers whose attribution one pass goes on with.
const PASS_BATCH_MAX: i64 = 64;
/// Most deliveries in flight at once.
const DELIVERIES_IN_FLIGHT_MAX: usize = 8;

/// The retry delay after attempt `attempts` (1-based): `retry_base_ms × 2^(attempts−1)`,
/// capped at `retry_max_ms`, scaled by `jitter` ∈ [0.5, 1] so replicas do not retry in
/// lockstep.
pub fn backoff_ms(settings: &ClawbackSettings, attempts: i64, jitter: f64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 31) - 1).unwrap_or(30);
    let raw = settings
        .retry_base_ms
        .saturating_mul(1u64 << exponent)
        .min(settings.retry_max_ms);
    let jittered = (raw as f64 * jitter.clamp(0.5, 1.0)) as u64;
    i64::try_from(jittered.max(1)).unwrap_or(i64::MAX)
}

/// What payout's answer means for an order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Applied { diamonds: i64, applied_coins: i64 },
    NoCredit,
    Retry(String),
}

/// Finishes attributions and delivers clawback orders.
#[derive(Clone, Debug)]
pub struct Clawbacks {
    db: Db,
    payout: PayoutClient,
    settings: ClawbackSettings,
}

impl Clawbacks {
    pub fn new(db: Db, payout: PayoutClient, settings: ClawbackSettings) -> Self {
        Clawbacks {
            db,
            payout,
            settings,
        }
    }

    /// Passes until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let interval = Duration::from_millis(self.settings.interval_ms.max(10));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                passed = self.pass_once() => {
                    if let Err(e) = passed {
                        tracing::warn!(error = %e, "clawback pass failed; will retry");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: unfinished attributions go on (one bounded transaction per buyer), then
    /// due orders are delivered.
    pub async fn pass_once(&self) -> Result<(), WalletError> {
        let buyers = {
            let mut conn = self.db.conn().await?;
            store::buyers_with_pending_attribution(&mut conn, PASS_BATCH_MAX).await?
        };
        for buyer in buyers {
            let now = UnixMillis::now();
            let mut tx = self.db.begin_write().await?;
            ledger::lock_account(&mut tx, buyer.as_str(), now).await?;
            ledger::attribute_reversals(&mut tx, &buyer, now).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        let due = {
            let mut conn = self.db.conn().await?;
            store::due_clawback_orders(&mut conn, UnixMillis::now(), PASS_BATCH_MAX).await?
        };
        futures::stream::iter(due)
            .for_each_concurrent(DELIVERIES_IN_FLIGHT_MAX, |order| async move {
                let id = order.clawback_id.clone();
                if let Err(e) = self.deliver(order).await {
                    tracing::warn!(clawback_id = %id, error = %e,
                        "clawback delivery could not be recorded; will retry");
                }
            })
            .await;
        Ok(())
    }

    /// One delivery attempt, if this worker wins the claim on it.
    async fn deliver(&self, order: ClawbackOrderRow) -> Result<(), WalletError> {
        let lease_ms = i64::try_from(self.settings.lease_ms).unwrap_or(i64::MAX);
        {
            let now = UnixMillis::now();
            let mut tx = self.db.begin_write().await?;
            let lease_until = UnixMillis(now.0.saturating_add(lease_ms));
            if !store::claim_clawback_order(
                &mut tx,
                &order.clawback_id,
                order.attempts,
                lease_until,
            )
            .await?
            {
                return Ok(());
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        let attempts = order.attempts + 1;
        let outcome = self.ask_payout(&order).await?;
        let now = UnixMillis::now();
        let mut tx = self.db.begin_write().await?;
        match &outcome {
            Outcome::Applied {
                diamonds,
                applied_coins,
            } => {
                if store::finish_clawback_order(
                    &mut tx,
                    &order,
                    attempts,
                    ClawbackOrderState::Applied,
                    *diamonds,
                    *applied_coins,
                    now,
                )
                .await?
                {
                    tracing::info!(clawback_id = %order.clawback_id, diamonds, applied_coins,
                        "clawback applied");
                }
            }
            Outcome::NoCredit => {
                if store::finish_clawback_order(
                    &mut tx,
                    &order,
                    attempts,
                    ClawbackOrderState::NoCredit,
                    0,
                    0,
                    now,
                )
                .await?
                {
                    tracing::info!(clawback_id = %order.clawback_id,
                        "clawback has no credit to take back: the gift was compensated");
                }
            }
            Outcome::Retry(error) => {
                let jitter = rand::rng().random_range(0.5..=1.0);
                let delay = backoff_ms(&self.settings, attempts, jitter);
                if attempts >= self.settings.alarm_after_attempts {
                    tracing::error!(clawback_id = %order.clawback_id, attempts, %error, delay_ms = delay,
                        "clawback still not delivered; retrying, an operator should look");
                } else {
                    tracing::warn!(clawback_id = %order.clawback_id, attempts, %error, delay_ms = delay,
                        "clawback not delivered; will retry");
                }
                store::retry_clawback_order(
                    &mut tx,
                    &order.clawback_id,
                    attempts,
                    UnixMillis(now.0.saturating_add(delay)),
                    error,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Calls payout and judges its answer.
    async fn ask_payout(&self, order: &ClawbackOrderRow) -> Result<Outcome, WalletError> {
        let request = payout_pb::ClawbackDiamondsRequest {
            clawback_id: order.clawback_id.clone(),
            operation_id: order.operation_id.as_str().to_owned(),
            coins: order.coins,
            cause: payout_pb::ClawbackCause::PurchaseReversal.into(),
            cause_id: order.purchase_id.as_str().to_owned(),
            reason: order.reason.clone(),
        };
        let status = match self.payout.clone().clawback_diamonds(request).await {
            Ok(answer) => {
                return Ok(match answer.into_inner().clawback {
                    Some(c) => Outcome::Applied {
                        diamonds: c.diamonds,
                        applied_coins: c.coins,
                    },
                    None => Outcome::Retry("payout answered without the clawback".into()),
                });
            }
            Err(status) => status,
        };
        let reason = status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default();
        if status.code() == Code::NotFound && reason == reasons::payout::CREDIT_NOT_FOUND {
            let mut conn = self.db.conn().await?;
            let refunded = store::get_debit(&mut conn, order.operation_id.as_str())
                .await?
                .is_some_and(|d| d.refunded_coins > 0);
            return Ok(if refunded {
                Outcome::NoCredit
            } else {
                Outcome::Retry(format!(
                    "payout has no credit for {} yet (the gift saga may still be crediting)",
                    order.operation_id
                ))
            });
        }
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" [{reason}]")
        };
        Ok(Outcome::Retry(format!(
            "payout answered {:?}{reason}: {}",
            status.code(),
            status.message()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let settings = ClawbackSettings {
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            ..ClawbackSettings::default()
        };
        assert_eq!(backoff_ms(&settings, 1, 1.0), 100);
        assert_eq!(backoff_ms(&settings, 2, 1.0), 200);
        assert_eq!(backoff_ms(&settings, 4, 1.0), 800);
        assert_eq!(backoff_ms(&settings, 5, 1.0), 1_000);
        assert_eq!(backoff_ms(&settings, 1_000, 1.0), 1_000);
        assert_eq!(backoff_ms(&settings, 2, 0.5), 100);
        assert_eq!(
            backoff_ms(&settings, 2, 0.0),
            100,
            "jitter is at least half"
        );
        assert_eq!(backoff_ms(&settings, 0, 1.0), 100);
    }
}
