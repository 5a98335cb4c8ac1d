//! Payment providers' webhook events, each applied exactly once.
//!
//! An event is recorded in `provider_events` (keyed by provider and event id) in the same
//! transaction as its effect, so a redelivery — later or concurrent — finds the row and does
//! nothing. Delivery order does not matter:
//! - `payment_intent.succeeded` completes the PENDING purchase it is for (one that waited
//!   for its customer, or whose charge answer is still in flight); a purchase already
//!   COMPLETED or REVERSED is left as it is.
//! - `charge.refunded` (fully refunded) and `charge.dispute.created` reverse a COMPLETED
//!   purchase through the operators' reversal path (coins clawed back, spent coins become
//!   debt and are attributed to gifts, clawback orders to payout), actor `stripe`. For a
//!   purchase still PENDING the event is refused unrecorded ([`Applied::NotYet`]): the
//!   webhook answers 409 and Stripe delivers it again later, by when the purchase has
//!   completed. A partial refund is recorded and ignored (coins are reversed whole only;
//!   an operator decides), as is an event about a purchase this wallet does not have.
//! - App Store Server Notifications v2 (keyed by `notificationUUID`): `REFUND` and `REVOKE`
//!   reverse the purchase of their transaction the same way, actor `app_store`; other
//!   types, and transactions this wallet never redeemed, are recorded and ignored.

use ovation_store::Db;
use ovation_types::limits::TEXT_CHARS_MAX;
use ovation_types::{Text, UnixMillis};
use ovation_webhooks::stripe_event::Event;

use crate::domain::{PaymentProviderKind, PurchaseState};
use crate::ledger::{self, ReverseCmd, WalletError};
use crate::payment::app_store::AppStoreNotification;
use crate::store::{self, PurchaseRow};

/// The actor of record of a reversal a Stripe event made.
pub const STRIPE_ACTOR: &str = "stripe";
/// The actor of record of a reversal an App Store notification made.
pub const APP_STORE_ACTOR: &str = "app_store";

/// The longest event id accepted (Stripe's are ~30 characters).
pub const EVENT_ID_BYTES_MAX: usize = 255;

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now; what it did.
    Done { outcome: String },
    /// Applied before (a redelivery): nothing done.
    Duplicate,
    /// Cannot be applied yet (its purchase has not completed); nothing recorded, so the
    /// provider's redelivery applies it later.
    NotYet { reason: String },
}

/// The effect of one event inside its transaction.
enum Step {
    Done {
        purchase_id: String,
        outcome: String,
    },
    NotYet(String),
}

/// Applies a verified Stripe event once.
pub async fn apply_stripe_event(
    db: &Db,
    event: &Event,
    now: UnixMillis,
) -> Result<Applied, WalletError> {
    let provider = PaymentProviderKind::Stripe.name();
    let mut tx = db.begin_write().await?;
    if !store::record_provider_event(&mut tx, provider, &event.id, &event.event_type, now).await? {
        return Ok(Applied::Duplicate);
    }
    let step = match event.event_type.as_str() {
        "payment_intent.succeeded" => intent_succeeded(&mut tx, event, now).await?,
        "charge.refunded" => {
            if event.data.object.get("refunded").and_then(|v| v.as_bool()) == Some(true) {
                reverse_for(&mut tx, event, "payment_intent", now).await?
            } else {
                Step::Done {
                    purchase_id: String::new(),
                    outcome: "ignored: a partial refund (purchases are reversed whole)".into(),
                }
            }
        }
        "charge.dispute.created" => reverse_for(&mut tx, event, "payment_intent", now).await?,
        other => Step::Done {
            purchase_id: String::new(),
            outcome: format!("ignored: {other} is not handled"),
        },
    };
    match step {
        Step::NotYet(reason) => Ok(Applied::NotYet { reason }),
        Step::Done {
            purchase_id,
            outcome,
        } => {
            store::set_provider_event_outcome(&mut tx, provider, &event.id, &purchase_id, &outcome)
                .await?;
            tx.commit().await.map_err(ovation_store::StoreError::from)?;
            tracing::info!(event_id = %event.id, event_type = %event.event_type,
                purchase_id = %purchase_id, %outcome, "stripe event applied");
            Ok(Applied::Done { outcome })
        }
    }
}

/// The purchase a PaymentIntent is for: by the intent id we recorded, else by the
/// `purchase_id` we put in its metadata (the first answer may still be in flight).
async fn purchase_of_intent(
    conn: &mut ovation_store::db::Conn,
    intent_id: &str,
    metadata_purchase_id: Option<&str>,
) -> Result<Option<PurchaseRow>, WalletError> {
    if let Some(found) =
        store::get_purchase_by_provider_reference(conn, PaymentProviderKind::Stripe, intent_id)
            .await?
    {
        return Ok(Some(found));
    }
    let Some(purchase_id) = metadata_purchase_id else {
        return Ok(None);
    };
    Ok(store::get_purchase(conn, purchase_id)
        .await?
        .filter(|p| p.payment_provider == PaymentProviderKind::Stripe)
        .filter(|p| p.provider_reference.is_empty() || p.provider_reference == intent_id))
}

async fn intent_succeeded(
    conn: &mut ovation_store::db::Conn,
    event: &Event,
    now: UnixMillis,
) -> Result<Step, WalletError> {
    let intent_id = event.object_str("id").unwrap_or("");
    let Some(purchase) =
        purchase_of_intent(conn, intent_id, event.object_metadata("purchase_id")).await?
    else {
        return Ok(ignored(
            "",
            "no purchase of this wallet has this PaymentIntent",
        ));
    };
    let amount = event.data.object.get("amount").and_then(|v| v.as_i64());
    let currency = event.object_str("currency").unwrap_or("");
    if amount != Some(purchase.amount_minor)
        || !currency.eq_ignore_ascii_case(purchase.currency_code.as_str())
    {
        tracing::error!(event_id = %event.id, purchase_id = %purchase.purchase_id,
            "a succeeded PaymentIntent does not match its purchase's price; not credited");
        return Ok(ignored(
            purchase.purchase_id.as_str(),
            "the PaymentIntent's amount or currency is not the purchase's",
        ));
    }
    let outcome = match purchase.state {
        PurchaseState::Pending => {
            if ledger::complete_purchase(conn, &purchase, intent_id, now).await? {
                "completed".to_owned()
            } else {
                "ignored: settled concurrently".to_owned()
            }
        }
        PurchaseState::Declined => {
            // Paid after the wallet took a decline as final (the customer confirmed the
            // same intent again client-side): money moved but no coins. An operator refunds.
            tracing::error!(event_id = %event.id, purchase_id = %purchase.purchase_id,
                "a PaymentIntent succeeded for a DECLINED purchase; refund it in Stripe");
            "ignored: the purchase was declined (refund it)".to_owned()
        }
        state => format!("ignored: the purchase is {state:?} already"),
    };
    Ok(Step::Done {
        purchase_id: purchase.purchase_id.as_str().to_owned(),
        outcome,
    })
}

/// Reverses the purchase whose PaymentIntent the event's object names in `intent_field`.
async fn reverse_for(
    conn: &mut ovation_store::db::Conn,
    event: &Event,
    intent_field: &str,
    now: UnixMillis,
) -> Result<Step, WalletError> {
    let Some(intent_id) = event.object_str(intent_field).filter(|s| !s.is_empty()) else {
        return Ok(ignored("", "the event names no PaymentIntent"));
    };
    let Some(purchase) = purchase_of_intent(conn, intent_id, None).await? else {
        return Ok(ignored(
            "",
            "no purchase of this wallet has this PaymentIntent",
        ));
    };
    match purchase.state {
        PurchaseState::Pending => Ok(Step::NotYet(format!(
            "purchase {} has not completed yet; deliver again later",
            purchase.purchase_id
        ))),
        PurchaseState::Declined | PurchaseState::Reversed => Ok(ignored(
            purchase.purchase_id.as_str(),
            &format!("the purchase is {:?}", purchase.state),
        )),
        PurchaseState::Completed => {
            let detail = event
                .object_str("reason")
                .map(|r| format!(", reason {r}"))
                .unwrap_or_default();
            let reason = format!(
                "stripe {} {} ({} {}{detail})",
                event.event_type,
                event.id,
                event.object_str("object").unwrap_or("object"),
                event.object_str("id").unwrap_or("")
            );
            reverse_completed(conn, &purchase, STRIPE_ACTOR, &reason, now).await
        }
    }
}

/// Reverses a COMPLETED purchase through the operators' reversal path, as `actor`.
async fn reverse_completed(
    conn: &mut ovation_store::db::Conn,
    purchase: &PurchaseRow,
    actor: &str,
    reason: &str,
    now: UnixMillis,
) -> Result<Step, WalletError> {
    let cmd = ReverseCmd {
        purchase_id: purchase.purchase_id.clone(),
        actor: actor.to_owned(),
        reason: Text::parse(&truncate(reason, TEXT_CHARS_MAX))
            .map_err(|e| WalletError::Inconsistent(format!("reversal reason: {e}")))?,
    };
    let reversed = ledger::reverse_purchase(conn, &cmd, now).await?;
    Ok(Step::Done {
        purchase_id: purchase.purchase_id.as_str().to_owned(),
        outcome: format!(
            "reversed: {} coins clawed back, {} debt",
            reversed.reversal_clawed_back, reversed.reversal_debt
        ),
    })
}

/// Applies a verified App Store notification once (by `notificationUUID`): `REFUND` and
/// `REVOKE` reverse the purchase of the transaction, actor `app_store`; anything else, or
/// a transaction this wallet never redeemed, is recorded and ignored.
pub async fn apply_app_store_notification(
    db: &Db,
    notification: &AppStoreNotification,
    now: UnixMillis,
) -> Result<Applied, WalletError> {
    let provider = PaymentProviderKind::AppStore.name();
    let mut tx = db.begin_write().await?;
    if !store::record_provider_event(
        &mut tx,
        provider,
        &notification.notification_uuid,
        &notification.notification_type,
        now,
    )
    .await?
    {
        return Ok(Applied::Duplicate);
    }
    let step = match notification.notification_type.as_str() {
        "REFUND" | "REVOKE" => {
            match store::get_purchase_by_provider_reference(
                &mut tx,
                PaymentProviderKind::AppStore,
                &notification.transaction_id,
            )
            .await?
            {
                None => ignored("", "no purchase of this wallet has this transaction"),
                Some(purchase) if purchase.state == PurchaseState::Completed => {
                    let reason = format!(
                        "app_store {} {} (transaction {})",
                        notification.notification_type,
                        notification.notification_uuid,
                        notification.transaction_id
                    );
                    reverse_completed(&mut tx, &purchase, APP_STORE_ACTOR, &reason, now).await?
                }
                Some(purchase) => ignored(
                    purchase.purchase_id.as_str(),
                    &format!("the purchase is {:?}", purchase.state),
                ),
            }
        }
        other => ignored("", &format!("{other} is not handled")),
    };
    let Step::Done {
        purchase_id,
        outcome,
    } = step
    else {
        return Err(WalletError::Inconsistent(
            "an App Store purchase is never PENDING".into(),
        ));
    };
    store::set_provider_event_outcome(
        &mut tx,
        provider,
        &notification.notification_uuid,
        &purchase_id,
        &outcome,
    )
    .await?;
    tx.commit().await.map_err(ovation_store::StoreError::from)?;
    tracing::info!(notification_uuid = %notification.notification_uuid,
        notification_type = %notification.notification_type,
        purchase_id = %purchase_id, %outcome, "app store notification applied");
    Ok(Applied::Done { outcome })
}

fn ignored(purchase_id: &str, why: &str) -> Step {
    Step::Done {
        purchase_id: purchase_id.to_owned(),
        outcome: format!("ignored: {why}"),
    }
}

fn truncate(text: &str, chars_max: usize) -> String {
    text.chars().take(chars_max).collect()
}
