//! The webhook listener over real HTTP on loopback.

use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use ovation_server::Shutdown;
use ovation_webhooks::{Limits, serve_with_limits};
use tokio::net::TcpListener;

async fn start(
    limits: Limits,
) -> (
    String,
    Shutdown,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = axum::Router::new()
        .route(
            "/hook",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve_with_limits(
        listener,
        routes,
        shutdown.clone(),
        limits,
    ));
    (base, shutdown, task)
}

#[tokio::test]
async fn posts_within_bounds_reach_the_handler_and_the_rest_is_refused() {
    let (base, shutdown, task) = start(Limits {
        body_bytes_max: 1024,
        request_timeout_ms: 200,
    })
    .await;
    let client = reqwest::Client::new();

    let ok = client
        .post(format!("{base}/hook"))
        .body("x".repeat(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1024");

    let big = client
        .post(format!("{base}/hook"))
        .body("x".repeat(1025))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);

    let get = client.get(format!("{base}/hook")).send().await.unwrap();
    assert_eq!(get.status(), 405);

    let missing = client.post(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let slow = client.post(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(slow.status(), 503);

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the listener stops on shutdown")
        .unwrap()
        .unwrap();
}

#[test]
fn the_default_limits_are_the_named_constants() {
    let limits = Limits::default();
    assert_eq!(limits.body_bytes_max, ovation_webhooks::BODY_BYTES_MAX);
    assert_eq!(limits.body_bytes_max, 64 * 1024);
    assert_eq!(
        limits.request_timeout_ms,
        ovation_webhooks::REQUEST_TIMEOUT_MS
    );
}
