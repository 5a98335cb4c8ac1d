//! The wallet's provider webhook endpoint (`OVATION_WALLET_WEBHOOK_ADDR`): `POST
//! /webhooks/stripe` and `POST /webhooks/app_store` (App Store Server Notifications v2,
//! verified with the configured Apple roots). Thin: verify the signature over the raw body (a bad or missing one is
//! 400 and nothing is read further), parse the event, apply it once
//! ([`crate::provider_events`]), answer. Stripe treats any non-2xx answer as a failed
//! delivery and retries it for days.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use ovation_store::Db;
use ovation_types::Clock;
use ovation_webhooks::stripe_event::Event;
use ovation_webhooks::stripe_signature::Verifier;

use crate::payment::app_store::AppStore;
use crate::provider_events::{self, Applied, EVENT_ID_BYTES_MAX};

/// Where Stripe delivers events.
pub const STRIPE_PATH: &str = "/webhooks/stripe";
/// Where the App Store delivers Server Notifications (v2).
pub const APP_STORE_PATH: &str = "/webhooks/app_store";

#[derive(Clone)]
struct AppStoreEndpoint {
    db: Db,
    app_store: Arc<AppStore>,
    clock: Clock,
}

#[derive(Clone)]
struct StripeEndpoint {
    db: Db,
    verifier: Arc<Verifier>,
    clock: Clock,
}

/// The webhook routes for the configured providers (Stripe's when it has webhook secrets,
/// the App Store's when it is configured).
pub fn routes(
    db: Db,
    stripe: Option<Verifier>,
    app_store: Option<Arc<AppStore>>,
    clock: Clock,
) -> axum::Router {
    let mut router = axum::Router::new();
    if let Some(verifier) = stripe {
        router = router.route(
            STRIPE_PATH,
            post(stripe_event).with_state(StripeEndpoint {
                db: db.clone(),
                verifier: Arc::new(verifier),
                clock: clock.clone(),
            }),
        );
    }
    if let Some(app_store) = app_store {
        router = router.route(
            APP_STORE_PATH,
            post(app_store_notification).with_state(AppStoreEndpoint {
                db,
                app_store,
                clock,
            }),
        );
    }
    router
}

async fn app_store_notification(State(endpoint): State<AppStoreEndpoint>, body: Bytes) -> Response {
    let now = endpoint.clock.now();
    let notification = match endpoint
        .app_store
        .notification(&body, now.0.div_euclid(1000))
    {
        Ok(notification) => notification,
        Err(e) => {
            tracing::warn!(error = %e, "app store notification refused");
            return (StatusCode::BAD_REQUEST, e).into_response();
        }
    };
    match provider_events::apply_app_store_notification(&endpoint.db, &notification, now).await {
        Ok(Applied::Done { outcome }) => (StatusCode::OK, outcome).into_response(),
        Ok(Applied::Duplicate) => (StatusCode::OK, "already applied").into_response(),
        Ok(Applied::NotYet { reason }) => (StatusCode::CONFLICT, reason).into_response(),
        Err(e) => {
            tracing::error!(notification_uuid = %notification.notification_uuid, error = %e,
                "app store notification not applied; Apple will retry");
            (StatusCode::INTERNAL_SERVER_ERROR, "not applied; retry").into_response()
        }
    }
}

async fn stripe_event(
    State(endpoint): State<StripeEndpoint>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = endpoint.clock.now();
    if let Err(e) = endpoint
        .verifier
        .verify_request(&headers, &body, now.0.div_euclid(1000))
    {
        tracing::warn!(error = %e, "stripe webhook refused: signature");
        return (StatusCode::BAD_REQUEST, "invalid signature").into_response();
    }
    let event = match Event::parse(&body) {
        Ok(event) if !event.id.is_empty() && event.id.len() <= EVENT_ID_BYTES_MAX => event,
        Ok(_) => return (StatusCode::BAD_REQUEST, "bad event id").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "stripe webhook refused: not an event");
            return (StatusCode::BAD_REQUEST, "not a Stripe event").into_response();
        }
    };
    match provider_events::apply_stripe_event(&endpoint.db, &event, now).await {
        Ok(Applied::Done { outcome }) => (StatusCode::OK, outcome).into_response(),
        Ok(Applied::Duplicate) => (StatusCode::OK, "already applied").into_response(),
        Ok(Applied::NotYet { reason }) => (StatusCode::CONFLICT, reason).into_response(),
        Err(e) => {
            tracing::error!(event_id = %event.id, error = %e, "stripe event not applied; Stripe will retry");
            (StatusCode::INTERNAL_SERVER_ERROR, "not applied; retry").into_response()
        }
    }
}
