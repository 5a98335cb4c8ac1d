//! The HTTP listener for provider webhooks.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use ovation_server::Shutdown;
use tokio::net::TcpListener;

/// The largest request body accepted, in bytes. Provider events are a few KiB (a Stripe
/// event with an expanded charge stays well below this); anything larger is refused with
/// 413 before a handler reads it.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// How long one request may take, from its head read to the answer, in milliseconds.
/// Past it the caller gets 503 and retries (providers retry webhooks for days); the
/// handler's future is dropped with its open transaction, so nothing half-written stays.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The bounds of one listener ([`Limits::default`] is the constants above).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: BODY_BYTES_MAX,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        }
    }
}

/// Serves `routes` on `listener` with the default [`Limits`] until `shutdown` trips, then
/// drains in-flight requests.
///
/// Every route is POST only (anything else is 405 before a handler runs), bodies above
/// the limit are 413, and a request still running at the timeout is answered 503.
pub async fn serve(
    listener: TcpListener,
    routes: axum::Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_with_limits(listener, routes, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    routes: axum::Router,
    shutdown: Shutdown,
    limits: Limits,
) -> std::io::Result<()> {
    let timeout_ms = limits.request_timeout_ms;
    let app = routes
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .layer(middleware::from_fn(move |request, next| {
            bounded(request, next, timeout_ms)
        }));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving provider webhooks");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

/// POST only, and a deadline on each request.
async fn bounded(request: Request, next: Next, timeout_ms: u64) -> Response {
    if request.method() != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(http::header::ALLOW, "POST")],
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_millis(timeout_ms), next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms,
                "webhook request timed out; the provider will retry"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "timed out").into_response()
        }
    }
}
