//! `GET /metrics` over HTTP/1.1.

use std::future::Future;

use axum::routing::get;
use tokio::net::TcpListener;

/// The content type of what `/metrics` answers (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (the [`crate::global`] registry) on `listener` until `shutdown`
/// completes. Any other path is 404.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                crate::global().encode(),
            )
        }),
    );
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving Prometheus metrics on /metrics");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
