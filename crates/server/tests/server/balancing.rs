//! Client-side balancing of peer channels: calls spread over every address a peer's name
//! resolves to, and follow the name when its addresses change (a pod goes away).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovation_server::peer::{PEER_RESOLVE_INTERVAL, PeerAddress, balanced_channel};
use ovation_server::tls::ClientTls;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A health server on loopback that knows only the service `name`, so a check of `name`
/// tells which server answered (the other says NOT_FOUND).
async fn health_server(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(name, ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    addr
}

async fn answered_by_a(client: &mut HealthClient<tonic::transport::Channel>) -> bool {
    client
        .check(HealthCheckRequest {
            service: "a".into(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_address_and_follow_changes() {
    let a = health_server("a").await;
    let b = health_server("b").await;
    let resolved = Arc::new(Mutex::new(vec![a, b]));
    let seen = resolved.clone();
    let address = PeerAddress {
        url: "http://peer.test:1".into(),
        tls: ClientTls::default(),
    };
    let channel = balanced_channel(&address, "peer.test".into(), 1, move |_, _| {
        let list = seen.lock().unwrap().clone();
        async move { Ok(list) }
    });
    let mut client = HealthClient::new(channel);
    let mut by_a = 0;
    for _ in 0..40 {
        if answered_by_a(&mut client).await {
            by_a += 1;
        }
    }
    assert!(
        by_a > 0 && by_a < 40,
        "both addresses serve calls: {by_a} of 40 went to a"
    );

    // The name now resolves to b only: after a re-resolve, every call goes to b.
    *resolved.lock().unwrap() = vec![b];
    tokio::time::sleep(PEER_RESOLVE_INTERVAL + Duration::from_millis(500)).await;
    for _ in 0..20 {
        assert!(
            !answered_by_a(&mut client).await,
            "a was removed from the pool"
        );
    }
}
