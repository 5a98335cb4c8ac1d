//! Secrets never reach a log or an error: every log line (at TRACE) of a catalog that
//! serves good and bad tokens is captured and searched for tokens and key material.
//!
//! A binary of its own: it installs the process-wide log subscriber, once per process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ovation_auth::Role;
use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_testkit::services::{catalog_config, start_catalog};
use ovation_testkit::{Bearer, TestDatabase, signer, token};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_keys_appear_in_no_log_line_and_no_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let db = TestDatabase::sqlite();
    let running = start_catalog(catalog_config(db.url(), true)).await;

    let admin = token("ops", &[Role::Admin]);
    let viewer = token("alice", &[Role::Viewer]);
    let now = ovation_auth::keys::now_secs();
    let expired = signer().mint_at("ops", &[Role::Admin], now - 7_200, 60);
    let forged = ovation_auth::Signer::hs256(ovation_testkit::TEST_KID, &[9u8; 32]).mint(
        "ops",
        &[Role::Admin],
        60,
    );
    let mut errors = Vec::new();
    for bearer_token in [&admin, &viewer, &expired, &forged] {
        let mut client = CatalogServiceClient::with_interceptor(
            running.channel().await,
            Bearer::new(bearer_token),
        );
        let _ = client.list_gifts(pb::ListGiftsRequest::default()).await;
        let created = client
            .create_gift(pb::CreateGiftRequest {
                idempotency_key: format!("k-{}", bearer_token.len()),
                gift_id: "star".into(),
                name: "Star".into(),
                coin_price: 10,
                enabled: true,
                ..Default::default()
            })
            .await;
        if let Err(status) = created {
            errors.push(format!("{status:?}"));
        }
    }
    running.stop().await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("rpc"),
        "the capture saw the RPC spans: {logs}"
    );
    let keys_file = std::fs::read_to_string(ovation_testkit::test_keys_file()).unwrap();
    let secret = keys_file.split_whitespace().nth(2).unwrap();
    for (what, needle) in [
        ("admin token", admin.as_str()),
        ("viewer token", &viewer),
        ("expired token", &expired),
        ("forged token", &forged),
        ("hs256 secret", secret),
    ] {
        // The signature part alone is enough to replay a token: look for it too.
        let signature = needle.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(needle) && !logs.contains(signature),
            "the {what} is in the logs"
        );
        for error in &errors {
            assert!(
                !error.contains(needle) && !error.contains(signature),
                "the {what} is in an error: {error}"
            );
        }
    }
    assert_eq!(
        errors.len(),
        3,
        "viewer, expired and forged were refused: {errors:?}"
    );
}
