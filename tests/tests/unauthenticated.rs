//! Every RPC of every service that exists refuses a caller without valid credentials:
//! no token, garbage, expired, wrong signature, unknown key id. The RPC list comes from the
//! contracts' descriptor set, so a new RPC is covered the day it is added.

use std::sync::Arc;

use ovation_auth::{Role, Signer};
use ovation_testkit::{Bearer, Running, TestDatabase, server_config, signer, test_keys_file};
use prost::Message;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

fn methods(service: &str) -> Vec<(String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(ovation_proto::FILE_DESCRIPTOR_SET).unwrap();
    let (package, name) = service.rsplit_once('.').unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| f.service.iter())
        .filter(|s| s.name() == name)
        .flat_map(|s| s.method.iter())
        .map(|m| (m.name().to_owned(), m.server_streaming()))
        .collect()
}

#[tokio::test]
async fn every_rpc_refuses_bad_credentials() {
    let catalog_db = TestDatabase::sqlite();
    let catalog_config = ovation_catalog::CatalogConfig {
        server: server_config(catalog_db.url()),
        seed_demo: true,
    };
    let catalog = Running::start(|l, s| ovation_catalog::run(catalog_config, l, s))
        .await
        .unwrap();
    let wallet_db = TestDatabase::sqlite();
    let wallet_config = ovation_wallet::WalletConfig {
        server: server_config(wallet_db.url()),
        wallet: ovation_wallet::WalletSettings::default(),
        catalog: ovation_server::peer::CatalogPeerArgs::plaintext(catalog.endpoint()),
        identity: ovation_server::peer::IdentityArgs {
            service_keys_file: Some(test_keys_file()),
            service_token_file: None,
        },
        provider: Arc::new(ovation_wallet::payment::SandboxProvider::new()),
    };
    let wallet = Running::start(|l, s| ovation_wallet::run(wallet_config, l, s))
        .await
        .unwrap();
    let identity = || ovation_server::peer::IdentityArgs {
        service_keys_file: Some(test_keys_file()),
        service_token_file: None,
    };
    let payout_db = TestDatabase::sqlite();
    let payout_config = ovation_payout::PayoutConfig {
        server: server_config(payout_db.url()),
        catalog: ovation_server::peer::CatalogPeerArgs::plaintext(catalog.endpoint()),
        identity: identity(),
        provider: Arc::new(ovation_payout::provider::SandboxProvider::in_memory()),
        worker: ovation_payout::worker::WorkerConfig {
            poll_interval: std::time::Duration::from_millis(200),
            provider_timeout: std::time::Duration::from_secs(5),
            concurrency: 1,
            retry_budget: 3,
            backoff_base: std::time::Duration::from_millis(50),
            backoff_max: std::time::Duration::from_millis(500),
            drain: std::time::Duration::from_millis(200),
        },
    };
    let payout = Running::start(|l, s| ovation_payout::run(payout_config, l, s))
        .await
        .unwrap();
    let gifting_db = TestDatabase::sqlite();
    let gifting_config = ovation_gifting::GiftingConfig {
        server: server_config(gifting_db.url()),
        gifting: ovation_gifting::GiftingSettings::default(),
        catalog: ovation_server::peer::CatalogPeerArgs::plaintext(catalog.endpoint()),
        wallet: ovation_server::peer::WalletPeerArgs::plaintext(wallet.endpoint()),
        payout: ovation_server::peer::PayoutPeerArgs::plaintext(payout.endpoint()),
        identity: identity(),
    };
    let gifting = Running::start(|l, s| ovation_gifting::run(gifting_config, l, s))
        .await
        .unwrap();

    let now = ovation_auth::keys::now_secs();
    let credentials = [
        ("no token", Bearer::none()),
        ("garbage", Bearer::new("not-a-jwt")),
        (
            "expired",
            Bearer::new(&signer().mint_at("ops", &[Role::Admin], now - 7_200, 60)),
        ),
        (
            "wrong signature",
            Bearer::new(&Signer::hs256(ovation_testkit::TEST_KID, &[3u8; 32]).mint(
                "ops",
                &[Role::Admin],
                60,
            )),
        ),
        (
            "unknown kid",
            Bearer::new(&Signer::hs256("rotated-out", &[3u8; 32]).mint("ops", &[Role::Admin], 60)),
        ),
    ];
    let mut checked = 0;
    for (service, running) in [
        ("ovation.catalog.v1.CatalogService", &catalog),
        ("ovation.wallet.v1.WalletService", &wallet),
        ("ovation.payout.v1.PayoutService", &payout),
        ("ovation.gifting.v1.GiftingService", &gifting),
    ] {
        let rpcs = methods(service);
        assert!(
            rpcs.len() >= 8,
            "{service} has its RPCs in the descriptor set"
        );
        for (method, streaming) in rpcs {
            for (what, bearer) in &credentials {
                let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
                    running.channel().await,
                    bearer.clone(),
                ));
                grpc.ready().await.unwrap();
                let path: http::uri::PathAndQuery = format!("/{service}/{method}").parse().unwrap();
                // The empty message is a valid encoding of every request: the call is refused
                // before its body is looked at.
                let codec = tonic_prost::ProstCodec::<(), ()>::default();
                let code = if streaming {
                    grpc.server_streaming(tonic::Request::new(()), path, codec)
                        .await
                        .map(|_| Code::Ok)
                } else {
                    grpc.unary(tonic::Request::new(()), path, codec)
                        .await
                        .map(|_| Code::Ok)
                }
                .unwrap_or_else(|s| s.code());
                assert_eq!(
                    code,
                    Code::Unauthenticated,
                    "{service}/{method} with {what}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 250, "checked {checked} calls");
    gifting.stop().await.unwrap();
    payout.stop().await.unwrap();
    wallet.stop().await.unwrap();
    catalog.stop().await.unwrap();
}
