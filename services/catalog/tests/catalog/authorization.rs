//! The catalog's rows of the authorization matrix (ARCHITECTURE.md), over real gRPC:
//! each row allowed and denied, and every way a token can be bad.

use ovation_auth::Role;
use ovation_auth::keys::Claims;
use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_testkit::services::{catalog_config, start_catalog};
use ovation_testkit::{Bearer, CatalogClient, Running, TestDatabase, code};
use tonic::Code;

async fn start() -> (Running, TestDatabase) {
    let db = TestDatabase::sqlite();
    let running = start_catalog(catalog_config(db.url(), true)).await;
    (running, db)
}

async fn client(running: &Running, bearer: Bearer) -> CatalogClient {
    CatalogServiceClient::with_interceptor(running.channel().await, bearer)
}

fn as_role(role: Role) -> Bearer {
    Bearer::role(
        &format!("someone-{}", role.as_str().replace(':', "-")),
        role,
    )
}

async fn read(client: &mut CatalogClient) -> Code {
    let request = pb::GetGiftRequest {
        gift_id: "rose".into(),
        version: 0,
    };
    code(client.get_gift(request).await)
}

async fn write(client: &mut CatalogClient, key: &str) -> Code {
    let request = pb::UpdateGiftRequest {
        idempotency_key: key.into(),
        gift_id: "rose".into(),
        asset_url: Some(format!("https://assets.example/{key}.webp")),
        ..Default::default()
    };
    code(client.update_gift(request).await)
}

#[tokio::test]
async fn every_authenticated_role_reads_and_only_admins_write() {
    let (running, _db) = start().await;
    for role in Role::ALL {
        let mut client = client(&running, as_role(role)).await;
        assert_eq!(
            read(&mut client).await,
            Code::Ok,
            "{role} reads the catalog"
        );
        let expected = if role == Role::Admin {
            Code::Ok
        } else {
            Code::PermissionDenied
        };
        assert_eq!(
            write(&mut client, &format!("w-{role}")).await,
            expected,
            "{role} writes"
        );
    }
    // Denied writes changed nothing: only the admin's update made a version.
    let mut admin = client(&running, Bearer::admin()).await;
    let versions = admin
        .list_gift_versions(pb::ListGiftVersionsRequest {
            gift_id: "rose".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.gifts.len(), 2);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_on_reads_and_writes() {
    let (running, _db) = start().await;
    let signer = ovation_testkit::signer();
    let now = ovation_auth::keys::now_secs();
    let expired = signer.mint_at("test-admin", &[Role::Admin], now - 3_600, 60);
    let forged = ovation_auth::Signer::hs256(ovation_testkit::TEST_KID, &[7u8; 32]).mint(
        "test-admin",
        &[Role::Admin],
        60,
    );
    let unknown_kid =
        ovation_auth::Signer::hs256("other", &[7u8; 32]).mint("test-admin", &[Role::Admin], 60);
    let bad_subject = signer.mint_claims(&Claims {
        sub: "not an id".into(),
        roles: vec!["admin".into()],
        exp: now + 60,
        ..Claims::default()
    });
    // The gifting service's key is good for gifting's role only: it cannot make an admin.
    let service_key_as_admin =
        ovation_testkit::service_signer(Role::GiftingService).mint("gifting", &[Role::Admin], 60);
    let service_role_from_people_key = signer.mint("gifting", &[Role::GiftingService], 60);
    let immortal = signer.mint("test-admin", &[Role::Admin], 365 * 86_400);
    for (what, bearer) in [
        ("no token", Bearer::none()),
        ("garbage", Bearer::new("garbage")),
        (
            "a service's key claiming admin",
            Bearer::new(&service_key_as_admin),
        ),
        (
            "a people key claiming a service role",
            Bearer::new(&service_role_from_people_key),
        ),
        ("a token living a year", Bearer::new(&immortal)),
        ("expired", Bearer::new(&expired)),
        ("wrong signature", Bearer::new(&forged)),
        ("unknown kid", Bearer::new(&unknown_kid)),
        ("bad subject", Bearer::new(&bad_subject)),
    ] {
        let mut client = client(&running, bearer).await;
        assert_eq!(
            read(&mut client).await,
            Code::Unauthenticated,
            "read with {what}"
        );
        assert_eq!(
            write(&mut client, "w").await,
            Code::Unauthenticated,
            "write with {what}"
        );
    }
    // Health and reflection stay open: kubelets and grpcurl carry no token.
    assert!(ovation_testkit::serving(running.addr).await);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn mutating_calls_are_rate_limited_per_caller() {
    let db = TestDatabase::sqlite();
    let mut config = catalog_config(db.url(), true);
    config.server.args.auth.rate_limit_per_second = 1;
    config.server.args.auth.rate_limit_burst = 3;
    let running = start_catalog(config).await;
    let mut admin = client(&running, Bearer::admin()).await;
    let mut codes = Vec::new();
    for i in 0..6 {
        codes.push(write(&mut admin, &format!("burst-{i}")).await);
    }
    assert_eq!(&codes[..3], [Code::Ok; 3], "{codes:?}");
    assert!(codes[3..].contains(&Code::ResourceExhausted), "{codes:?}");
    // Reads are not rate limited, and another caller has its own bucket.
    assert_eq!(read(&mut admin).await, Code::Ok);
    let mut other = client(&running, Bearer::role("other-admin", Role::Admin)).await;
    assert_eq!(write(&mut other, "other-1").await, Code::Ok);
    running.stop().await.unwrap();
}
