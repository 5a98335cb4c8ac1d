//! The reversal driver: takes a reversed gift's diamonds back in payout and, if asked,
//! returns its coins in wallet, the way [`crate::saga`] drives a saga.
//!
//! A reversal is recorded PENDING by ReverseGift (with the stream's REVERSED event, in one
//! transaction, so the gift has left leaderboards before anything is called), leased to
//! the replica that recorded it. Each step's outcome is saved, fenced by the reversal's own
//! lease (the saga's is for PENDING sagas; a reversed gift's saga is COMPLETED and stays
//! so). Operation ids derive from the saga id (clawback `gift:<saga>`, refund
//! `<saga>.reversal`), so a step retried after a crash, a timeout or a takeover is the
//! same operation downstream and applies once. The recovery loop resumes every PENDING
//! reversal whose lease is free or expired; RetrySaga resumes one needing an operator.

use std::time::Duration;

use ovation_proto::{payout as payout_pb, wallet as wallet_pb};
use ovation_types::UnixMillis;

use crate::domain::{
    Reversal, ReversalOutcome, ReversalState, ReversalStep, Saga, judge_reversal, truncate,
};
use crate::hops::call_failure;
use crate::saga::{DriveError, SagaEngine};
use crate::store::{self, LeaseAfter, SagaRow};

/// Longest note the wallet keeps with a refund.
const REFUND_NOTE_CHARS_MAX: usize = 500;

impl SagaEngine {
    /// Drives a gift's reversal until it is DONE, needs an operator, waits longer than
    /// half its lease for a retry (the lease is let go; recovery resumes it when due), or
    /// another replica holds it. Returns the gift (with its reversal) then.
    pub async fn drive_reversal(&self, saga_id: &str) -> Result<SagaRow, DriveError> {
        let Some(_driving) = self.start_driving(&format!("reversal:{saga_id}")) else {
            return self.load(saga_id).await;
        };
        loop {
            let now = UnixMillis::now();
            let claimed = {
                let _turn = self.db.write_turn().await;
                let mut conn = self.db.conn().await?;
                store::claim_reversal_lease(
                    &mut conn,
                    saga_id,
                    &self.owner,
                    self.lease_until(now),
                    now,
                )
                .await?
            };
            let row = self.load(saga_id).await?;
            let Some(mut reversal) = row.pending_reversal().cloned().filter(|_| claimed) else {
                return Ok(row);
            };
            if self.shutdown.is_triggered() {
                self.release_reversal(saga_id).await?;
                return self.load(saga_id).await;
            }
            let wait = reversal.next_attempt_at.0 - now.0;
            if wait > 0 {
                if wait > self.settings.lease_ms / 2 {
                    self.release_reversal(saga_id).await?;
                    return self.load(saga_id).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = self.shutdown.wait() => {}
                }
                continue;
            }
            let outcome = self.run_reversal_step(&row.saga, &reversal).await;
            let now = UnixMillis::now();
            reversal.apply(outcome, now, &self.settings.retry, rand::random::<f64>());
            let lease = if reversal.state == ReversalState::Pending {
                LeaseAfter::Renew(self.lease_until(now))
            } else {
                LeaseAfter::Release
            };
            let saved = {
                let _turn = self.db.write_turn().await;
                let mut conn = self.db.conn().await?;
                store::save_reversal(&mut conn, &reversal, &self.owner, lease).await?
            };
            // Fenced out (another replica took it over, or an operator freed the lease):
            // the next pass claims it again, which fails if someone else holds it.
            if saved && reversal.state != ReversalState::Pending {
                if reversal.state == ReversalState::NeedsOperator {
                    tracing::error!(saga_id, step = ?reversal.step, error = %reversal.last_error,
                        "gift reversal handed to an operator (ListStuckSagas, RetrySaga)");
                }
                return self.load(saga_id).await;
            }
        }
    }

    async fn release_reversal(&self, saga_id: &str) -> Result<(), DriveError> {
        let _turn = self.db.write_turn().await;
        let mut conn = self.db.conn().await?;
        store::release_reversal_lease(&mut conn, saga_id, &self.owner).await?;
        Ok(())
    }

    /// Runs the reversal's current step once and classifies the answer.
    async fn run_reversal_step(&self, saga: &Saga, reversal: &Reversal) -> ReversalOutcome {
        let Some(quote) = saga.quote else {
            return ReversalOutcome::Refused {
                detail: "the reversed gift has no quote recorded".into(),
            };
        };
        match reversal.step {
            ReversalStep::Clawback => {
                let reply = self
                    .peers
                    .payout
                    .clone()
                    .clawback_diamonds(self.timed(payout_pb::ClawbackDiamondsRequest {
                        clawback_id: reversal.clawback_id(),
                        operation_id: saga.operation_id().to_owned(),
                        coins: quote.total_coins,
                        cause: payout_pb::ClawbackCause::GiftReversal.into(),
                        cause_id: saga.saga_id.clone(),
                        reason: reversal.reason.clone(),
                    }))
                    .await;
                match reply {
                    Ok(r) => ReversalOutcome::ClawedBack {
                        diamonds: r.into_inner().clawback.map_or(0, |c| c.diamonds),
                    },
                    Err(s) => judge_reversal(reversal.step, &call_failure("payout", &s)),
                }
            }
            ReversalStep::ReturnCoins => {
                let reply = self
                    .peers
                    .wallet
                    .clone()
                    .refund_coins(self.timed(wallet_pb::RefundCoinsRequest {
                        idempotency_key: reversal.refund_operation_id(),
                        operation_id: reversal.refund_operation_id(),
                        debit_operation_id: saga.operation_id().to_owned(),
                        coins: Some(quote.total_coins),
                        note: truncate(
                            &format!("gift reversal: {}", reversal.reason),
                            REFUND_NOTE_CHARS_MAX,
                        ),
                    }))
                    .await;
                match reply {
                    Ok(r) => ReversalOutcome::CoinsReturned {
                        coins: r.into_inner().refund.map_or(0, |f| f.coins),
                    },
                    Err(s) => judge_reversal(reversal.step, &call_failure("wallet", &s)),
                }
            }
            ReversalStep::Done => ReversalOutcome::Refused {
                detail: "the reversal has no step left".into(),
            },
        }
    }

    /// One recovery pass over reversals: resume every due one whose lease is free or
    /// expired. Returns how many.
    pub(crate) async fn recover_reversals_once(&self) -> Result<usize, DriveError> {
        let due = {
            let mut conn = self.db.conn().await?;
            store::due_reversals(
                &mut conn,
                UnixMillis::now(),
                self.settings.recovery_batch_max,
            )
            .await?
        };
        let count = due.len();
        let mut running = tokio::task::JoinSet::new();
        for saga_id in due {
            let engine = self.clone();
            let span = tracing::info_span!("resume_reversal", saga_id = %saga_id);
            running.spawn(tracing::Instrument::instrument(
                async move {
                    if let Err(e) = engine.drive_reversal(&saga_id).await {
                        tracing::warn!(saga_id, error = %e, "resuming a reversal failed; will retry");
                    }
                },
                span,
            ));
        }
        while running.join_next().await.is_some() {}
        Ok(count)
    }
}
