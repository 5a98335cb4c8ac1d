//! Purchase velocity limits per buyer over the last hour, over real gRPC on SQLite and
//! (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL, with the wallet's clock moved by
//! the tests instead of sleeping.

use ovation_testkit::{TestDatabase, WalletClient, databases, reason};
use ovation_types::{Clock, UnixMillis};
use ovation_wallet::WalletSettings;
use ovation_wallet::payment::{TOKEN_DECLINE, TOKEN_OK};
use tonic::Code;

use crate::suite::*;

const MINUTE_MS: i64 = 60_000;

async fn suite_with(db: &TestDatabase, per_hour: i64, money_per_hour: i64) -> Suite {
    Suite::start_custom(
        db,
        SuiteOptions {
            settings: WalletSettings {
                purchases_per_hour_max: per_hour,
                purchase_amount_minor_per_hour_max: money_per_hour,
                ..WalletSettings::default()
            },
            clock: Some(Clock::manual(UnixMillis::now())),
            payout: false,
            stripe: None,
            app_store: None,
        },
    )
    .await
}

/// How many purchases `user` has recorded.
async fn recorded(client: &mut WalletClient, user: &str) -> usize {
    client
        .list_purchases(ovation_proto::wallet::ListPurchasesRequest {
            user_id: user.into(),
            state: 0,
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .expect("purchases")
        .into_inner()
        .purchases
        .len()
}

/// `tonic::Status` of a refused purchase, checked to be the velocity limit `limit`.
fn assert_velocity(status: &tonic::Status, limit: &str, context: &str) {
    assert_eq!(
        (status.code(), reason(status).as_str()),
        (Code::ResourceExhausted, "VELOCITY_LIMIT"),
        "{context}: {status:?}"
    );
    assert!(
        status.message().contains(limit),
        "{context}: the message names {limit}: {status:?}"
    );
    // The wallet runs in this process: the refusal is counted in its registry.
    let counted = format!("ovation_velocity_limit_refusals_total{{limit=\"{limit}\"}}");
    assert!(
        ovation_metrics::global().encode().contains(&counted),
        "{context}: {counted} is counted"
    );
}

/// The count limit: declines count (card testing), the next purchase is refused with
/// nothing recorded, a replay of an earlier key still answers, and the window slides.
#[tokio::test]
async fn purchases_beyond_the_hourly_count_are_refused_until_the_window_slides() {
    for db in databases().await {
        let suite = suite_with(&db, 3, 0).await;
        let backend = suite.backend;
        let mut vic = suite.user("vic").await;
        open_account(&mut vic, "vic").await;
        let first = buy(&mut vic, "vic", "k1", "coins_100", TOKEN_OK).await;
        suite.clock.advance(10 * MINUTE_MS);
        let declined = buy(&mut vic, "vic", "k2", "coins_100", TOKEN_DECLINE).await;
        assert_eq!(
            declined.state,
            ovation_proto::wallet::PurchaseState::Declined as i32
        );
        buy(&mut vic, "vic", "k3", "coins_100", TOKEN_OK).await;
        let refused = vic
            .purchase_coins(purchase_request("vic", "k4", "coins_100", TOKEN_OK))
            .await
            .unwrap_err();
        assert_velocity(&refused, "purchases_per_hour", backend);
        assert_eq!(
            recorded(&mut vic, "vic").await,
            3,
            "[{backend}] nothing recorded"
        );
        let replay = buy(&mut vic, "vic", "k1", "coins_100", TOKEN_OK).await;
        assert_eq!(
            replay.purchase_id, first.purchase_id,
            "[{backend}] a replay answers the original, never the limit"
        );
        // 59 minutes after the first: still three in the last hour.
        suite.clock.advance(49 * MINUTE_MS);
        let still = vic
            .purchase_coins(purchase_request("vic", "k4", "coins_100", TOKEN_OK))
            .await
            .unwrap_err();
        assert_velocity(&still, "purchases_per_hour", backend);
        // An hour after the first, it leaves the window.
        suite.clock.advance(MINUTE_MS);
        let reopened = buy(&mut vic, "vic", "k4", "coins_100", TOKEN_OK).await;
        assert_eq!(
            reopened.state,
            ovation_proto::wallet::PurchaseState::Completed as i32,
            "[{backend}]"
        );
        assert_eq!(recorded(&mut vic, "vic").await, 4, "[{backend}]");
        suite.stop().await;
    }
}

/// The money limit, per currency: declined purchases do not count; a purchase that would
/// take the hour's money past the limit is refused, a smaller one still fits; the count
/// limit at 0 is off.
#[tokio::test]
async fn money_beyond_the_hourly_amount_is_refused() {
    for db in databases().await {
        // coins_1000 costs 1,399 USD cents, coins_500 699, coins_100 139.
        let suite = suite_with(&db, 0, 2_000).await;
        let backend = suite.backend;
        let mut wyn = suite.user("wyn").await;
        open_account(&mut wyn, "wyn").await;
        buy(&mut wyn, "wyn", "d1", "coins_1000", TOKEN_DECLINE).await;
        buy(&mut wyn, "wyn", "k1", "coins_1000", TOKEN_OK).await;
        for (key, package) in [("k2", "coins_1000"), ("k3", "coins_500")] {
            let refused = wyn
                .purchase_coins(purchase_request("wyn", key, package, TOKEN_OK))
                .await
                .unwrap_err();
            assert_velocity(&refused, "purchase_money_per_hour", backend);
        }
        assert_eq!(recorded(&mut wyn, "wyn").await, 2, "[{backend}]");
        // 1,399 + 139 = 1,538 ≤ 2,000.
        buy(&mut wyn, "wyn", "k4", "coins_100", TOKEN_OK).await;
        suite.clock.advance(60 * MINUTE_MS);
        buy(&mut wyn, "wyn", "k5", "coins_1000", TOKEN_OK).await;
        suite.stop().await;
    }
}

/// Twenty purchases by one buyer at once, with the limit at five: exactly five are
/// recorded, the rest refused with the reason (PostgreSQL is where they could slip past
/// together).
#[tokio::test]
async fn concurrent_purchases_never_exceed_the_count_limit() {
    for db in databases().await {
        let suite = suite_with(&db, 5, 0).await;
        let backend = suite.backend;
        let mut xia = suite.user("xia").await;
        open_account(&mut xia, "xia").await;
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let mut client = xia.clone();
                tokio::spawn(async move {
                    client
                        .purchase_coins(purchase_request(
                            "xia",
                            &format!("c{i}"),
                            "coins_100",
                            TOKEN_OK,
                        ))
                        .await
                })
            })
            .collect();
        let (mut bought, mut credited) = (0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(answer) => {
                    bought += 1;
                    credited += answer.into_inner().purchase.unwrap().coins_credited;
                }
                Err(status) => assert_velocity(&status, "purchases_per_hour", backend),
            }
        }
        assert_eq!(bought, 5, "[{backend}] exactly the limit");
        assert_eq!(recorded(&mut xia, "xia").await, 5, "[{backend}]");
        let mut admin = suite.admin().await;
        assert_eq!(
            balance(&mut xia, "xia").await.posted_coins,
            credited,
            "[{backend}] the five purchases' coins, credited once each"
        );
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}
