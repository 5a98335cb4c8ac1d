//! Applying the payout provider's events (Stripe's webhooks), each exactly once: the
//! event's id is recorded in the transaction that applies it, and a delivery that finds
//! it recorded does nothing. What each event does (README, "Payout provider"):
//!
//! - `transfer.reversed`: money of a payout's transfer came back to the platform. Recorded
//!   against the payout (the transfer's cumulative reversed amount, so events out of
//!   order only ever raise it); **nothing moves in the diamond ledger**. A HELD payout is
//!   being cancelled (the worker's cancel reverses it, and its `pay` then answers
//!   Declined: RELEASED by the worker). A PAID payout reversed afterwards is an
//!   operator's act at Stripe (payout never reverses a paid transfer, and Stripe reverses
//!   separate transfers only when asked): it is counted in
//!   `ovation_payout_provider_alerts{kind="transfer_reversed"}` and logged as an error,
//!   for an operator to decide whether the creator is owed the money again. Crediting the
//!   diamonds back by itself would let a reversal made for fraud be cashed out again.
//! - `payout.failed`: a connected account's bank payout failed; the money stays in the
//!   creator's Stripe balance. Recorded with the creator whose account it is, counted in
//!   `…{kind="bank_payout_failed"}`, logged as an error; nothing moves (the creator was
//!   paid, to their Stripe account; their bank details need fixing there).
//! - anything else: recorded as IGNORED.

use ovation_store::{Db, StoreError};
use ovation_types::UnixMillis;

use crate::domain::{EventEffect, ProviderEvent};
use crate::store::{self, BankPayoutFailure};

/// What a delivery of an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now; what it recorded.
    Applied(String),
    /// Recorded, nothing to do; why.
    Ignored(String),
    /// Received before: nothing done again.
    Duplicate,
}

fn applied(detail: String) -> (&'static str, Applied) {
    ("APPLIED", Applied::Applied(detail))
}

fn ignored(detail: String) -> (&'static str, Applied) {
    ("IGNORED", Applied::Ignored(detail))
}

/// Applies `event` unless it was received before, in one transaction.
pub async fn apply(db: &Db, event: &ProviderEvent, now: UnixMillis) -> Result<Applied, StoreError> {
    let mut tx = db.begin_write().await?;
    // The event's row first: a duplicate finds it (a concurrent one waits for it) and
    // does nothing; its outcome is filled in below, in the same transaction.
    if !store::insert_provider_event(&mut tx, &event.id, &event.event_type, now).await? {
        tx.rollback().await?;
        return Ok(Applied::Duplicate);
    }
    let (outcome, applied) = match &event.effect {
        EventEffect::TransferReversed {
            payout_id,
            transfer_id,
            currency,
            amount_reversed_minor,
        } => {
            let payout = match payout_id {
                Some(id) => store::get_payout(&mut tx, id).await?,
                None => None,
            };
            match payout {
                None => ignored(format!(
                    "transfer {transfer_id} is not a payout's (payout {payout_id:?} unknown)"
                )),
                Some(_) if *amount_reversed_minor == 0 => {
                    ignored(format!("transfer {transfer_id}: nothing reversed"))
                }
                Some(payout) => {
                    store::record_payout_reversal(
                        &mut tx,
                        &payout.id,
                        transfer_id,
                        currency,
                        *amount_reversed_minor,
                        &event.id,
                        now,
                    )
                    .await?;
                    applied(format!(
                        "payout {} ({}): {amount_reversed_minor} {currency} minor units of \
                         transfer {transfer_id} reversed",
                        payout.id,
                        payout.state.as_str()
                    ))
                }
            }
        }
        EventEffect::BankPayoutFailed {
            account: Some(account),
            bank_payout_id,
            currency,
            amount_minor,
            failure_code,
            failure_message,
        } => {
            let creator_id = store::creator_with_account(&mut tx, account)
                .await?
                .unwrap_or_default();
            store::insert_bank_payout_failure(
                &mut tx,
                &BankPayoutFailure {
                    event_id: event.id.clone(),
                    account_reference: account.clone(),
                    creator_id: creator_id.clone(),
                    bank_payout_id: bank_payout_id.clone(),
                    currency: currency.clone(),
                    amount_minor: *amount_minor,
                    failure_code: failure_code.clone(),
                    failure_message: failure_message.clone(),
                    at: now,
                },
            )
            .await?;
            applied(format!(
                "bank payout {bank_payout_id} of {account} (creator {creator_id:?}) failed: \
                 {failure_code}"
            ))
        }
        EventEffect::BankPayoutFailed { account: None, .. } => {
            ignored("the platform's own bank payout, not a creator's".into())
        }
        EventEffect::Other => ignored("payout does not act on this type".into()),
    };
    let detail = match &applied {
        Applied::Applied(d) | Applied::Ignored(d) => d.as_str(),
        Applied::Duplicate => "",
    };
    store::set_provider_event_outcome(&mut tx, &event.id, outcome, detail).await?;
    tx.commit().await?;
    match &applied {
        Applied::Applied(detail) => {
            tracing::error!(event_id = %event.id, event_type = %event.event_type, %detail,
                "payout provider reported money coming back or a failed bank payout: operator \
                 attention needed")
        }
        Applied::Ignored(detail) => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, %detail,
                "payout provider event ignored")
        }
        Applied::Duplicate => {}
    }
    Ok(applied)
}
