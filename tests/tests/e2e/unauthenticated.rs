//! Every RPC of every service that exists refuses a caller without valid credentials:
//! no token, garbage, expired, wrong signature, unknown key id. The RPC list comes from the
//! contracts' descriptor set, so a new RPC is covered the day it is added.

use ovation_auth::{Role, Signer};
use ovation_e2e::in_process;
use ovation_testkit::{Bearer, Service, signer};
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
    let suite = in_process::start().await;

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
    for (service, under_test) in [
        ("ovation.catalog.v1.CatalogService", Service::Catalog),
        ("ovation.wallet.v1.WalletService", Service::Wallet),
        ("ovation.payout.v1.PayoutService", Service::Payout),
        ("ovation.gifting.v1.GiftingService", Service::Gifting),
    ] {
        let rpcs = methods(service);
        assert!(
            rpcs.len() >= 8,
            "{service} has its RPCs in the descriptor set"
        );
        for (method, streaming) in rpcs {
            for (what, bearer) in &credentials {
                let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
                    suite.channel(under_test).await,
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
    suite.stop().await;
}
