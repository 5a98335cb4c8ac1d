//! The `ovation-wallet` binary's payment-provider settings, as a container runs it: a sandbox
//! provider without OVATION_ALLOW_SANDBOX, or a provider not built yet, refuses to start —
//! exiting non-zero with a message naming what to change, never serving.

use ovation_e2e::{EXIT_BOUND, ServiceProcess, binary, free_addr};
use ovation_testkit::TestDatabase;
use tokio::process::Command;

fn wallet_command(db: &TestDatabase) -> Command {
    let mut command = Command::new(binary("ovation-wallet", "ovation-wallet"));
    // Only what the test sets: no settings leak in from the caller's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OVATION_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("RUST_LOG", "off")
        .env("OVATION_LISTEN_ADDR", free_addr().to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("OVATION_AUTH_KEYS_FILE", ovation_testkit::test_keys_file())
        .env(
            "OVATION_SERVICE_KEYS_FILE",
            ovation_testkit::test_keys_file(),
        );
    command
}

/// Runs the wallet with `env` and returns its exit code and stderr; it must exit by itself.
async fn refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let db = TestDatabase::sqlite();
    let mut command = wallet_command(&db);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut wallet = ServiceProcess::spawn(command).expect("ovation-wallet spawns");
    let status = wallet
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|e| panic!("ovation-wallet with {env:?} should exit: {e}"));
    (status.code(), wallet.stderr())
}

#[tokio::test]
async fn the_sandbox_without_allow_sandbox_refuses_to_start_naming_the_setting() {
    // Named explicitly, and by default (no OVATION_PAYMENT_PROVIDERS at all).
    for env in [
        &[("OVATION_PAYMENT_PROVIDERS", "sandbox")][..],
        &[][..],
        &[
            ("OVATION_PAYMENT_PROVIDERS", "sandbox"),
            ("OVATION_ALLOW_SANDBOX", "false"),
        ][..],
    ] {
        let (code, stderr) = refused(env).await;
        assert!(
            code.is_some_and(|c| c != 0),
            "{env:?}: expected a non-zero exit, got {code:?}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("OVATION_ALLOW_SANDBOX"),
            "{env:?}: the message names the setting; stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{env:?}: stderr:\n{stderr}");
    }
}

#[tokio::test]
async fn providers_not_built_or_missing_secrets_refuse_to_start() {
    for (env, expected) in [
        (
            &[("OVATION_PAYMENT_PROVIDERS", "app_store")][..],
            "OVATION_APP_STORE_ROOT_CERTS_FILE",
        ),
        (
            &[("OVATION_PAYMENT_PROVIDERS", "google_play")][..],
            "not built yet",
        ),
        (
            &[("OVATION_PAYMENT_PROVIDERS", "paypal")][..],
            "unknown provider",
        ),
        (
            &[("OVATION_PAYMENT_PROVIDERS", "stripe")][..],
            "OVATION_STRIPE_SECRET_KEY_FILE",
        ),
    ] {
        let (code, stderr) = refused(env).await;
        assert!(
            code.is_some_and(|c| c != 0),
            "{env:?}: expected a non-zero exit, got {code:?}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{env:?}: expected {expected:?}; stderr:\n{stderr}"
        );
    }
}
