//! `ovation bench` end to end: the real binary against the four services, a small load,
//! then its own audit; it must finish with exit 0 (every gift sent, the audit clean). No
//! figure is asserted: speed is for the bench's report, not for tests.
//!
//! Then `ovation audit`'s time windows on that suite: two violations are planted, one in
//! a saga of the bench (before a mark) and one orphan debit after the mark; a window finds
//! the one in it and not the other, and an audit without a window finds both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ovation_auth::Role;
use ovation_e2e::{binary, in_process};
use ovation_proto::{gifting as gpb, wallet as wpb};
use ovation_testkit::{Bearer, InProcessSuite, Service, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_bench_runs_and_its_audit_is_clean() {
    let suite = in_process::start().await;
    let url = |service| suite.endpoint(service);
    let output = tokio::process::Command::new(binary("ovation", "ovation"))
        .args([
            "bench",
            "--gifts",
            "30",
            "--viewers",
            "3",
            "--creators",
            "2",
            "--concurrency",
            "4",
        ])
        .args(["--gift", "finger_heart"])
        .args(["--wallet-url", &url(Service::Wallet)])
        .args(["--catalog-url", &url(Service::Catalog)])
        .args(["--gifting-url", &url(Service::Gifting)])
        .args(["--payout-url", &url(Service::Payout)])
        .arg("--keys-file")
        .arg(ovation_testkit::test_keys_file())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the bench finishes within two minutes")
        .expect("ovation bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("audit: no violation"),
        "the bench ran the audit:\n{stdout}"
    );
    assert!(
        stdout.contains("COMPLETED 30, REJECTED 0, COMPENSATED 0, PENDING 0, errors 0"),
        "every gift of the load completed:\n{stdout}"
    );
    audit_windows_see_what_is_in_them(&suite).await;
    suite.stop().await;
}

/// Now, in Unix ms.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix ms as RFC 3339 (UTC), as `ovation audit --since/--until` takes it.
fn rfc3339(ms: i64) -> String {
    // Howard Hinnant's civil_from_days (public domain).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let in_day = ms.rem_euclid(86_400_000);
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// Runs `ovation audit` with `window` flags; (exit 0, stdout and stderr).
async fn audit(suite: &InProcessSuite, window: &[&str]) -> (bool, String) {
    let url = |service| suite.endpoint(service);
    let output = tokio::process::Command::new(binary("ovation", "ovation"))
        .arg("audit")
        .args(window)
        .args(["--wallet-url", &url(Service::Wallet)])
        .args(["--payout-url", &url(Service::Payout)])
        .args(["--gifting-url", &url(Service::Gifting)])
        .args(["--token", &token("ops", &[Role::Admin])])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the audit finishes within a minute")
        .expect("ovation audit runs");
    let printed = format!(
        "{window:?} exit {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

async fn audit_windows_see_what_is_in_them(suite: &InProcessSuite) {
    let bench_start = now_ms() - 10 * 60_000;
    // A clean suite: clean in a window too.
    let (ok, printed) = audit(suite, &["--since", &rfc3339(bench_start)]).await;
    assert!(ok && printed.contains("audit: no violation"), "{printed}");
    assert!(
        printed.contains(&format!(
            "audit window: sagas created in [{}, +∞)",
            rfc3339(bench_start)
        )),
        "the window is printed: {printed}"
    );

    // One violation in the bench's window: a completed gift's coins given back.
    let mut gifting = suite.clients.gifting_admin().await;
    let sagas = gifting
        .list_sagas(gpb::ListSagasRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("ListSagas")
        .into_inner()
        .sagas;
    let receipt = sagas[0].receipt.clone().expect("a receipt");
    assert_eq!(receipt.status, gpb::SagaStatus::Completed as i32);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mark = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut wallet = suite
        .clients
        .wallet(Bearer::role("gifting", Role::GiftingService))
        .await;
    wallet
        .refund_coins(wpb::RefundCoinsRequest {
            idempotency_key: "audit-window-refund".into(),
            operation_id: "audit-window-refund".into(),
            debit_operation_id: receipt.saga_id.clone(),
            coins: None,
            note: "planted by the test".into(),
        })
        .await
        .expect("the refund is posted");
    // The other after the mark: a debit no saga made.
    wallet
        .debit_coins(wpb::DebitCoinsRequest {
            idempotency_key: "audit-window-orphan".into(),
            operation_id: "audit-window-orphan".into(),
            user_id: receipt.sender_user_id.clone(),
            coins: 1,
            saga_id: String::new(),
            note: "planted by the test".into(),
        })
        .await
        .expect("the orphan debit is posted");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = now_ms();

    let half_done = format!("{} COMPLETED but", receipt.saga_id);
    let orphan = "I4: 1 debits and 0 credits belong to no saga";
    let (ok, everything) = audit(suite, &[]).await;
    assert!(!ok, "{everything}");
    assert!(
        everything.contains("audit window: everything"),
        "{everything}"
    );
    assert!(
        everything.contains(&half_done) && everything.contains(orphan),
        "without a window, both: {everything}"
    );

    let (ok, bench) = audit(
        suite,
        &["--since", &rfc3339(bench_start), "--until", &rfc3339(mark)],
    )
    .await;
    assert!(!ok, "{bench}");
    assert!(bench.contains(&half_done), "the bench's window: {bench}");
    assert!(
        !bench.contains(orphan)
            && bench.contains("ok    I4: every debit and credit belongs to a saga"),
        "the orphan is after the bench's window: {bench}"
    );

    let (ok, later) = audit(suite, &["--since", &rfc3339(mark)]).await;
    assert!(!ok, "{later}");
    assert!(later.contains(orphan), "the later window: {later}");
    assert!(
        !later.contains("COMPLETED but"),
        "the bench's sagas are before the later window: {later}"
    );

    let (ok, clean) = audit(suite, &["--since", &rfc3339(after)]).await;
    assert!(ok && clean.contains("audit: no violation"), "{clean}");
}
