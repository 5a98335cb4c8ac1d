//! The catalog over real gRPC on loopback, against SQLite and (when
//! `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL: the same assertions on both.

use ovation_catalog::run;
use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::common::Money;
use ovation_testkit::services::{catalog_config, start_catalog};
use ovation_testkit::{Bearer, CatalogClient, Running, TestDatabase, databases, violated_fields};
use prost_types::Timestamp;
use tonic::Code;
use tonic_types::StatusExt;

async fn start(db: &TestDatabase, seed_demo: bool) -> (Running, CatalogClient) {
    let running = start_catalog(catalog_config(db.url(), seed_demo)).await;
    let client = CatalogServiceClient::with_interceptor(running.channel().await, Bearer::admin());
    (running, client)
}

fn create_star(key: &str, price: i64) -> pb::CreateGiftRequest {
    pb::CreateGiftRequest {
        idempotency_key: key.into(),
        gift_id: "star".into(),
        name: "Star".into(),
        coin_price: price,
        asset_url: String::new(),
        enabled: true,
        active_from: None,
        active_until: None,
    }
}

#[tokio::test]
async fn seeded_gifts_are_listed_page_by_page() {
    for db in databases().await {
        let (running, mut client) = start(&db, true).await;
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_gifts(pb::ListGiftsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    active_only: false,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.gifts.len() <= 3);
            ids.extend(page.gifts.into_iter().map(|g| g.gift_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(
            ids,
            [
                "confetti",
                "doughnut",
                "finger_heart",
                "galaxy",
                "lion",
                "rose",
                "universe"
            ],
            "on {}",
            db.backend()
        );
        let bad = client
            .list_gifts(pb::ListGiftsRequest {
                page_size: 501,
                page_token: "not-a-token".into(),
                active_only: false,
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&bad), ["page_size", "page_token"]);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn invalid_gifts_are_refused_with_every_field_named_and_nothing_written() {
    for db in databases().await {
        let (running, mut client) = start(&db, false).await;
        let mut request = create_star("bad-1", 0);
        request.name = "x".repeat(129);
        request.gift_id = "has space".into();
        request.active_from = Some(Timestamp {
            seconds: 2_000,
            nanos: 0,
        });
        request.active_until = Some(Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        let status = client.create_gift(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "on {}", db.backend());
        assert_eq!(
            violated_fields(&status),
            ["gift_id", "name", "coin_price", "active_until"]
        );
        assert!(status.message().contains("coin_price"));

        let status = client.create_gift(create_star("", 10)).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["idempotency_key"]);
        let status = client
            .create_gift(create_star(&"k".repeat(256), 10))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["idempotency_key"]);
        let status = client
            .create_gift(create_star("big", i64::MAX))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["coin_price"]);

        let listed = client
            .list_gifts(pb::ListGiftsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.gifts.is_empty(),
            "nothing written on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_update_makes_a_new_version_and_the_old_one_stays_readable() {
    for db in databases().await {
        let (running, mut client) = start(&db, false).await;
        client.create_gift(create_star("c1", 10)).await.unwrap();
        let v2 = client
            .update_gift(pb::UpdateGiftRequest {
                idempotency_key: "u1".into(),
                gift_id: "star".into(),
                coin_price: Some(20),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .gift
            .unwrap();
        assert_eq!(
            (v2.version, v2.coin_price, v2.name.as_str()),
            (2, 20, "Star")
        );

        let get = |version| pb::GetGiftRequest {
            gift_id: "star".into(),
            version,
        };
        let v1 = client
            .get_gift(get(1))
            .await
            .unwrap()
            .into_inner()
            .gift
            .unwrap();
        assert_eq!((v1.version, v1.coin_price), (1, 10), "on {}", db.backend());
        let latest = client
            .get_gift(get(0))
            .await
            .unwrap()
            .into_inner()
            .gift
            .unwrap();
        assert_eq!(latest.version, 2);
        assert_eq!(
            client.get_gift(get(3)).await.unwrap_err().code(),
            Code::NotFound
        );

        let versions = client
            .list_gift_versions(pb::ListGiftVersionsRequest {
                gift_id: "star".into(),
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(versions.gifts.len(), 1);
        let rest = client
            .list_gift_versions(pb::ListGiftVersionsRequest {
                gift_id: "star".into(),
                page_size: 1,
                page_token: versions.next_page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.gifts[0].version, 2);

        // A stale expected_version loses instead of overwriting.
        let stale = client
            .update_gift(pb::UpdateGiftRequest {
                idempotency_key: "u2".into(),
                gift_id: "star".into(),
                expected_version: 1,
                coin_price: Some(30),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted);
        let missing = client
            .update_gift(pb::UpdateGiftRequest {
                idempotency_key: "u3".into(),
                gift_id: "nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_idempotency_key_creates_once_replays_and_refuses_other_parameters() {
    for db in databases().await {
        let (running, mut client) = start(&db, false).await;
        let first = client
            .create_gift(create_star("k1", 10))
            .await
            .unwrap()
            .into_inner();
        let again = client
            .create_gift(create_star("k1", 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            first,
            again,
            "the replay is the original response on {}",
            db.backend()
        );

        let reused = client.create_gift(create_star("k1", 11)).await.unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists);
        assert_eq!(
            reused.get_error_details().error_info().unwrap().reason,
            "IDEMPOTENCY_KEY_REUSED"
        );
        // Another key for the same id is a second create: the id is taken.
        let taken = client.create_gift(create_star("k2", 10)).await.unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists);

        // Concurrent duplicates of one update: executed once, every caller gets version 2.
        let update = pb::UpdateGiftRequest {
            idempotency_key: "same-update".into(),
            gift_id: "star".into(),
            coin_price: Some(15),
            ..Default::default()
        };
        let calls = (0..16).map(|_| {
            let mut client = client.clone();
            let update = update.clone();
            tokio::spawn(async move { client.update_gift(update).await })
        });
        for call in calls {
            let gift = call.await.unwrap().unwrap().into_inner().gift.unwrap();
            assert_eq!(gift.version, 2, "on {}", db.backend());
        }
        let versions = client
            .list_gift_versions(pb::ListGiftVersionsRequest {
                gift_id: "star".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            versions.gifts.len(),
            2,
            "one update, not 16, on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn quotes_use_the_current_price_and_share_and_refuse_disabled_gifts() {
    for db in databases().await {
        let (running, mut client) = start(&db, true).await;
        let quote = client
            .quote_gift(pb::QuoteGiftRequest {
                gift_id: "doughnut".into(),
                quantity: 3,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                quote.total_coins,
                quote.creator_share_bps,
                quote.creator_diamonds
            ),
            (90, 5_000, 45)
        );
        assert_eq!(quote.economy_version, 1);

        client
            .update_gift(pb::UpdateGiftRequest {
                idempotency_key: "disable".into(),
                gift_id: "doughnut".into(),
                enabled: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        let refused = client
            .quote_gift(pb::QuoteGiftRequest {
                gift_id: "doughnut".into(),
                quantity: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "on {}",
            db.backend()
        );
        for quantity in [0, 100, -1] {
            let bad = client
                .quote_gift(pb::QuoteGiftRequest {
                    gift_id: "rose".into(),
                    quantity,
                })
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&bad), ["quantity"]);
        }
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn packages_promotions_and_economy_are_validated_and_versioned() {
    for db in databases().await {
        let (running, mut client) = start(&db, true).await;
        let usd = |amount_minor| Money {
            currency_code: "USD".into(),
            amount_minor,
        };
        let dup = client
            .create_coin_package(pb::CreateCoinPackageRequest {
                idempotency_key: "p1".into(),
                package_id: "coins_42".into(),
                name: "42 coins".into(),
                coins: 42,
                prices: vec![usd(59), usd(60)],
                enabled: true,
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&dup), ["prices"]);
        let zero = client
            .create_coin_package(pb::CreateCoinPackageRequest {
                idempotency_key: "p1".into(),
                package_id: "coins_42".into(),
                name: "42 coins".into(),
                coins: 0,
                prices: vec![usd(0)],
                enabled: true,
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&zero), ["coins", "prices[0].amount_minor"]);
        let package = client
            .create_coin_package(pb::CreateCoinPackageRequest {
                idempotency_key: "p2".into(),
                package_id: "coins_42".into(),
                name: "42 coins".into(),
                coins: 42,
                prices: vec![
                    usd(59),
                    Money {
                        currency_code: "EUR".into(),
                        amount_minor: 55,
                    },
                ],
                enabled: true,
            })
            .await
            .unwrap()
            .into_inner()
            .coin_package
            .unwrap();
        assert_eq!(package.prices.len(), 2);

        let day = |d: i64| {
            Some(Timestamp {
                seconds: 1_800_000_000 + d * 86_400,
                nanos: 0,
            })
        };
        let promotion =
            |key: &str, packages: Vec<String>, starts, ends| pb::CreatePromotionRequest {
                idempotency_key: key.into(),
                promotion_id: "double".into(),
                name: "Double".into(),
                bonus_bps: 10_000,
                package_ids: packages,
                starts_at: starts,
                ends_at: ends,
                per_user_cap: 1,
                enabled: true,
            };
        let backwards = client
            .create_promotion(promotion("x1", vec![], day(2), day(1)))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&backwards), ["ends_at"]);
        let unknown = client
            .create_promotion(promotion("x2", vec!["coins_nope".into()], day(1), day(2)))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "on {}", db.backend());
        client
            .create_promotion(promotion("x3", vec!["coins_42".into()], day(1), day(2)))
            .await
            .unwrap();
        let active = |at, package: &str| pb::ListPromotionsRequest {
            active_at: at,
            package_id: package.into(),
            ..Default::default()
        };
        let ids = |r: pb::ListPromotionsResponse| {
            r.promotions
                .into_iter()
                .map(|p| p.promotion_id)
                .collect::<Vec<_>>()
        };
        let inside = client
            .list_promotions(active(
                Some(Timestamp {
                    seconds: 1_800_000_000 + 86_400 + 60,
                    nanos: 0,
                }),
                "coins_42",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(ids(inside).contains(&"double".to_string()));
        let other_package = client
            .list_promotions(active(
                Some(Timestamp {
                    seconds: 1_800_000_000 + 86_400 + 60,
                    nanos: 0,
                }),
                "coins_100",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!ids(other_package).contains(&"double".to_string()));
        let after = client
            .list_promotions(active(day(3), "coins_42"))
            .await
            .unwrap()
            .into_inner();
        assert!(!ids(after).contains(&"double".to_string()));

        let too_big = client
            .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                idempotency_key: "e1".into(),
                creator_share_bps: Some(10_001),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&too_big), ["creator_share_bps"]);
        let v2 = client
            .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                idempotency_key: "e2".into(),
                creator_share_bps: Some(7_000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap();
        assert_eq!(
            (v2.version, v2.creator_share_bps, v2.payout_minimum_diamonds),
            (2, 7_000, 1_000)
        );
        let v1 = client
            .get_economy_parameters(pb::GetEconomyParametersRequest { version: 1 })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap();
        assert_eq!(v1.creator_share_bps, 5_000, "on {}", db.backend());

        // Diamond maturity: the demo economy's 72 h, kept by an update that leaves it
        // unset, bounded to 0..=8760, and 0 allowed.
        assert_eq!(v1.diamond_maturity_hours, 72, "on {}", db.backend());
        assert_eq!(v2.diamond_maturity_hours, 72, "on {}", db.backend());
        for bad in [-1, 8_761] {
            let refused = client
                .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                    idempotency_key: format!("e-bad-{bad}"),
                    diamond_maturity_hours: Some(bad),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&refused), ["diamond_maturity_hours"]);
        }
        let v3 = client
            .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                idempotency_key: "e3".into(),
                diamond_maturity_hours: Some(0),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap();
        assert_eq!(
            (v3.version, v3.diamond_maturity_hours, v3.creator_share_bps),
            (3, 0, 7_000),
            "on {}",
            db.backend()
        );

        // Payout controls: the demo's daily cap 100000 diamonds, review from 20000 and
        // 48 h of cooling-off, kept by updates that leave them unset, bounded, and 0
        // (none) allowed.
        for version in [&v1, &v2, &v3] {
            assert_eq!(
                (
                    version.payout_daily_cap_diamonds,
                    version.payout_review_threshold_diamonds,
                    version.payout_account_cooling_off_hours
                ),
                (100_000, 20_000, 48),
                "version {} on {}",
                version.version,
                db.backend()
            );
        }
        let refused = client
            .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                idempotency_key: "e-bad-controls".into(),
                payout_daily_cap_diamonds: Some(-1),
                payout_review_threshold_diamonds: Some(1_000_000_000_001),
                payout_account_cooling_off_hours: Some(8_761),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            violated_fields(&refused),
            [
                "payout_daily_cap_diamonds",
                "payout_review_threshold_diamonds",
                "payout_account_cooling_off_hours"
            ]
        );
        let v4 = client
            .update_economy_parameters(pb::UpdateEconomyParametersRequest {
                idempotency_key: "e4".into(),
                payout_daily_cap_diamonds: Some(0),
                payout_review_threshold_diamonds: Some(50_000),
                payout_account_cooling_off_hours: Some(0),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap();
        assert_eq!(
            (
                v4.version,
                v4.payout_daily_cap_diamonds,
                v4.payout_review_threshold_diamonds,
                v4.payout_account_cooling_off_hours,
                v4.diamond_maturity_hours
            ),
            (4, 0, 50_000, 0, 0),
            "on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_start_up_error() {
    let mut config = catalog_config("postgres://postgres@127.0.0.1:1/nowhere", true);
    config.server.args.db_connect_timeout_ms = 300;
    let listener = ovation_server::bind(config.server.listen_addr)
        .await
        .unwrap();
    let error = run(config, listener, ovation_server::Shutdown::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot reach the database"), "{error}");
}

/// Health follows the database: drop the database under a running catalog and it turns
/// NOT_SERVING. PostgreSQL only: it is the database a service can lose at run time.
#[tokio::test]
async fn health_turns_not_serving_when_the_database_goes_away() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let mut config = catalog_config(db.url(), false);
    config.server.args.health_probe_interval_ms = 100;
    let running = start_catalog(config).await;
    assert!(ovation_testkit::serving(running.addr).await);
    drop(db); // DROP DATABASE … WITH (FORCE)
    let mut not_serving = false;
    for _ in 0..100 {
        if !ovation_testkit::serving(running.addr).await {
            not_serving = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        not_serving,
        "health never left SERVING after the database was dropped"
    );
    // Liveness stays SERVING: losing the database is a reason to take no traffic, not to
    // be restarted.
    let mut health = tonic_health::pb::health_client::HealthClient::new(running.channel().await);
    let live = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: ovation_server::serve::LIVENESS_HEALTH_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.status, 1, "liveness stays SERVING");
    running.stop().await.unwrap();
}
