//! Payout's endpoint for the payout provider's webhooks: `POST /webhooks/stripe` on
//! `OVATION_PAYOUT_WEBHOOK_ADDR`, served by [`ovation_webhooks::serve`] (POST only, body
//! and time limits, shutdown with the service). A thin edge, like `grpc/`:
//!
//! 1. the `Stripe-Signature` header is verified against the endpoint's secrets first: a
//!    bad, missing or stale one is 400 and nothing is read or written;
//! 2. the event is parsed (400 if it is not a Stripe event payout can read);
//! 3. [`webhooks::apply`] applies it once by its id (a duplicate is 200 and does nothing);
//!    a database failure is 503, so Stripe delivers it again.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ovation_store::Db;
use ovation_types::UnixMillis;
use ovation_webhooks::stripe_event::Event;
use ovation_webhooks::stripe_signature::Verifier;

use crate::domain::ProviderEvent;
use crate::operations::webhooks;

/// Where Stripe posts payout's events.
pub const STRIPE_PATH: &str = "/webhooks/stripe";

struct Endpoint {
    db: Db,
    verifier: Verifier,
}

/// The routes of payout's webhook listener.
pub fn routes(db: Db, verifier: Verifier) -> Router {
    Router::new()
        .route(STRIPE_PATH, post(stripe))
        .with_state(Arc::new(Endpoint { db, verifier }))
}

async fn stripe(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    // Signatures are judged by the real clock, whatever clock the ledger's rules use.
    let now = UnixMillis::now();
    if let Err(e) = endpoint
        .verifier
        .verify_request(&headers, &body, now.0.div_euclid(1_000))
    {
        tracing::warn!(error = %e, "stripe webhook refused: bad signature");
        return (StatusCode::BAD_REQUEST, format!("bad signature: {e}"));
    }
    let event = match Event::parse(&body)
        .map_err(|e| e.to_string())
        .and_then(|e| ProviderEvent::from_stripe(&e))
    {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "stripe webhook refused: unreadable event");
            return (StatusCode::BAD_REQUEST, format!("unreadable event: {e}"));
        }
    };
    match webhooks::apply(&endpoint.db, &event, now).await {
        Ok(applied) => (StatusCode::OK, format!("{applied:?}")),
        Err(e) => {
            tracing::warn!(event_id = %event.id, error = %e,
                "stripe webhook not applied; Stripe delivers it again");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not applied; deliver it again".into(),
            )
        }
    }
}
