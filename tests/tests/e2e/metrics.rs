//! Issue 7's acceptance: `/metrics` on a running `ovation up` shows the saga and RPC
//! metrics after a few gifts.
//!
//! The real `ovation` binary runs `up` on free loopback ports with a temporary data
//! directory (SQLite) and the test keys; a viewer is funded, a creator registered, a few
//! gifts sent, then `GET /metrics` (plain HTTP/1.1 over a TcpStream) must count the
//! SendGift calls by method and code, the completed sagas, the saga steps and the
//! database pools.

use std::net::SocketAddr;
use std::time::Duration;

use ovation_e2e::process_suite::{TempDir, clean_env};
use ovation_e2e::{EXIT_BOUND, START_BOUND, ServiceProcess, binary, free_addr};
use ovation_proto::gifting as pb;
use ovation_testkit::{Bearer, SuiteClients, test_keys_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Gifts sent; each must end COMPLETED.
const GIFTS: usize = 3;
/// Longest the metrics may take to show the gifts.
const METRICS_BOUND: Duration = Duration::from_secs(30);

/// `GET /metrics` over a fresh HTTP/1.1 connection; the response, head and body.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the metrics endpoint {addr}: {e}"));
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request written");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the metrics endpoint answers within 10 s")
    .expect("the response is UTF-8 text");
    response
}

/// The value of the sample line `series` (name and labels exactly as exposed), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_ovation_up_show_rpcs_and_sagas_after_a_few_gifts() {
    let data = TempDir::new("metrics");
    let [catalog, wallet, gifting, payout, metrics] = std::array::from_fn(|_| free_addr());

    let mut command = Command::new(binary("ovation", "ovation"));
    clean_env(&mut command);
    command
        .arg("up")
        .arg("--data-dir")
        .arg(&data.0)
        .arg("--auth-keys-file")
        .arg(test_keys_file())
        .args(["--catalog-port", &catalog.port().to_string()])
        .args(["--wallet-port", &wallet.port().to_string()])
        .args(["--gifting-port", &gifting.port().to_string()])
        .args(["--payout-port", &payout.port().to_string()])
        .args(["--metrics-port", &metrics.port().to_string()])
        // Ledger and backlog gauges refreshed often enough for a test to see them move.
        .args(["--db-gauges-interval-ms", "200"]);
    let mut up = ServiceProcess::start(command, gifting).await;
    for addr in [catalog, wallet, payout] {
        up.wait_serving(addr, START_BOUND)
            .await
            .unwrap_or_else(|e| panic!("{addr} not SERVING: {e}\n{}", up.stderr()));
    }
    assert!(
        up.stdout().contains(&format!("http://{metrics}/metrics")),
        "`ovation up` says where /metrics is:\n{}",
        up.stdout()
    );

    // A funded viewer and a registered creator.
    let viewer = "mia";
    let creator = "max";
    let url = |addr: SocketAddr| format!("http://{addr}");
    let clients = SuiteClients {
        catalog: url(catalog),
        wallet: url(wallet),
        payout: url(payout),
        gifting: url(gifting),
    };
    let purchased_coins = clients
        .funded_viewer(viewer, "coins_1000")
        .await
        .unwrap_or_else(|e| panic!("funding {viewer}: {e}\n{}", up.stderr()));
    assert!(purchased_coins > 0, "{viewer} got no coins");
    clients
        .register_creator(creator)
        .await
        .unwrap_or_else(|e| panic!("RegisterCreator: {e}\n{}", up.stderr()));

    let mut gifting_client = clients.gifting_as(viewer).await;
    // A live watcher of the stream, opened before the gifts: their delivery lag is measured.
    let mut feed = gifting_client
        .watch_stream_gifts(pb::WatchStreamGiftsRequest {
            stream_id: "stream-metrics".into(),
            resume_cursor: String::new(),
            from_beginning: false,
        })
        .await
        .unwrap_or_else(|e| panic!("WatchStreamGifts: {e}\n{}", up.stderr()))
        .into_inner();
    for i in 0..GIFTS {
        let receipt = gifting_client
            .send_gift(pb::SendGiftRequest {
                idempotency_key: format!("metrics-gift-{i}"),
                sender_user_id: viewer.into(),
                creator_id: creator.into(),
                stream_id: "stream-metrics".into(),
                // Five coins: enough to credit diamonds (a one-coin rose floors to 0).
                gift_id: "finger_heart".into(),
                quantity: 1,
                message: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("SendGift {i}: {e}\n{}", up.stderr()))
            .into_inner()
            .receipt
            .expect("SendGift answers a receipt");
        assert!(receipt.status != 0, "{receipt:?}");
    }

    for i in 0..GIFTS {
        let event = tokio::time::timeout(METRICS_BOUND, feed.message())
            .await
            .unwrap_or_else(|_| panic!("gift event {i} not on the feed within {METRICS_BOUND:?}"))
            .unwrap_or_else(|e| panic!("feed failed: {e}"));
        assert!(event.is_some(), "the feed ended before gift event {i}");
    }

    // Sagas may still be finishing in the background: poll, bounded.
    let send_gift_ok = "ovation_rpc_requests_total{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\",code=\"OK\"}";
    let completed = "ovation_saga_outcomes_total{status=\"completed\"}";
    let deadline = tokio::time::Instant::now() + METRICS_BOUND;
    let response = loop {
        let response = scrape(metrics).await;
        if sample(&response, completed).unwrap_or(0.0) >= GIFTS as f64 {
            break response;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{completed} did not reach {GIFTS} within {METRICS_BOUND:?}:\n{response}\n--- ovation up stderr ---\n{}",
                up.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (head, text) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(
        sample(text, send_gift_ok) >= Some(GIFTS as f64),
        "SendGift calls counted by method and code:\n{text}"
    );
    assert!(
        sample(
            text,
            "ovation_rpc_duration_seconds_count{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\"}"
        ) >= Some(GIFTS as f64),
        "SendGift latency:\n{text}"
    );
    // The saga's calls to the other services are RPCs of those services, in the same
    // process-wide registry.
    // The sagas' debits and credits travel in batches: at least one call each, and
    // every gift an item of one.
    for (service, method) in [
        ("ovation.wallet.v1.WalletService", "DebitCoinsBatch"),
        ("ovation.payout.v1.PayoutService", "CreditDiamondsBatch"),
    ] {
        assert!(
            sample(
                text,
                &format!(
                    "ovation_rpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"OK\"}}"
                )
            ) >= Some(1.0),
            "{method} from the sagas:\n{text}"
        );
    }
    for hop in ["debit", "credit"] {
        assert_eq!(
            sample(
                text,
                &format!("ovation_saga_hop_batch_items_sum{{hop=\"{hop}\"}}")
            ),
            Some(GIFTS as f64),
            "every gift's {hop} an item of one batch:\n{text}"
        );
    }
    // A gift's price comes from the catalog at least once; later sends may reuse it.
    assert!(
        sample(
            text,
            "ovation_saga_step_duration_seconds_count{step=\"resolve_gift\"}"
        ) >= Some(1.0)
            || sample(
                text,
                "ovation_rpc_requests_total{service=\"ovation.catalog.v1.CatalogService\",method=\"QuoteGift\",code=\"OK\"}"
            ) >= Some(1.0),
        "the price was never asked:\n{text}"
    );
    for step in ["debit_coins", "credit_diamonds"] {
        assert!(
            sample(
                text,
                &format!("ovation_saga_step_duration_seconds_count{{step=\"{step}\"}}")
            ) >= Some(GIFTS as f64),
            "step {step} timed:\n{text}"
        );
    }
    assert_eq!(
        sample(text, "ovation_sagas_needing_operator"),
        Some(0.0),
        "{text}"
    );
    for service in ["catalog", "wallet", "gifting", "payout"] {
        assert!(
            sample(
                text,
                &format!("ovation_db_pool_connections{{service=\"{service}\",state=\"idle\"}}")
            )
            .is_some(),
            "{service}'s pool:\n{text}"
        );
    }
    // The outbox: one live watcher, every gift handed to it with its lag measured.
    assert_eq!(sample(text, "ovation_feed_watchers"), Some(1.0), "{text}");
    assert!(
        sample(text, "ovation_feed_delivery_lag_seconds_count") >= Some(GIFTS as f64),
        "{text}"
    );

    // Ledger totals (refreshed every 200 ms): poll until they show the gifts.
    let coins = |text: &str, account: &str| {
        sample(
            text,
            &format!("ovation_ledger_coins{{account=\"{account}\"}}"),
        )
    };
    let diamonds = |text: &str, account: &str| {
        sample(
            text,
            &format!("ovation_ledger_diamonds{{account=\"{account}\"}}"),
        )
    };
    let spent = (GIFTS * 5) as f64;
    let deadline = tokio::time::Instant::now() + METRICS_BOUND;
    let text = loop {
        let response = scrape(metrics).await;
        let text = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        let settled = coins(&text, "gift_sink") == Some(spent)
            // Credits are pending until they mature (72 h in the demo economy).
            && diamonds(&text, "creator_pending").is_some_and(|d| d > 0.0)
            && sample(&text, "ovation_sagas_in_flight") == Some(0.0);
        if settled {
            break text;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("ledger gauges did not show {GIFTS} gifts within {METRICS_BOUND:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = text.as_str();
    let coin_accounts = ["user", "issuance", "promotion", "gift_sink", "adjustment"];
    let coin_total: f64 = coin_accounts
        .iter()
        .map(|a| coins(text, a).unwrap_or(f64::NAN))
        .sum();
    assert_eq!(coin_total, 0.0, "the coin ledger balances (I1):\n{text}");
    assert_eq!(
        coins(text, "user"),
        Some(purchased_coins as f64 - spent),
        "users hold what they bought minus the gifts:\n{text}"
    );
    let diamond_accounts = [
        "creator",
        "creator_pending",
        "creator_held",
        "gift_issuance",
        "paid_out",
        "clawback",
    ];
    let diamond_total: f64 = diamond_accounts
        .iter()
        .map(|a| diamonds(text, a).unwrap_or(f64::NAN))
        .sum();
    assert_eq!(
        diamond_total, 0.0,
        "the diamond ledger balances (I1):\n{text}"
    );
    assert_eq!(
        sample(text, "ovation_saga_oldest_in_flight_age_seconds"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "ovation_payouts_needing_attention"),
        Some(0.0),
        "{text}"
    );

    // Errors carry their code: an unauthenticated call.
    let refused = clients
        .gifting(Bearer::none())
        .await
        .send_gift(pb::SendGiftRequest::default())
        .await
        .expect_err("no token, no gift");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let text = scrape(metrics).await;
    assert!(
        sample(
            &text,
            "ovation_rpc_requests_total{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\",code=\"UNAUTHENTICATED\"}"
        ) >= Some(1.0),
        "{text}"
    );

    up.terminate(EXIT_BOUND)
        .await
        .unwrap_or_else(|e| panic!("`ovation up` did not stop on SIGTERM: {e}"));
}
