//! `ovation bench` end to end: the real binary against the four services, a small load,
//! then its own audit; it must finish with exit 0 (every gift sent, the audit clean). No
//! figure is asserted: speed is for the bench's report, not for tests.

mod common;

use ovation_e2e::binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_bench_runs_and_its_audit_is_clean() {
    let suite = common::InProcessSuite::start().await;
    let url = |running: &ovation_testkit::Running| running.endpoint();
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
        .args(["--wallet-url", &url(&suite.wallet)])
        .args(["--catalog-url", &url(&suite.catalog)])
        .args(["--gifting-url", &url(&suite.gifting)])
        .args(["--payout-url", &url(&suite.payout)])
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
    suite.stop().await;
}
