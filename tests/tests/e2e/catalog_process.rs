//! The `ovation-catalog` binary as a container runs it: a separate process configured by
//! environment variables, serving the seeded catalog, stopping cleanly on SIGTERM, and
//! refusing to start (without panicking) when its database is unreachable.

use ovation_e2e::{EXIT_BOUND, ServiceProcess, binary, free_addr};
use ovation_proto::catalog::ListGiftsRequest;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_testkit::TestDatabase;
use tokio::process::Command;

/// The demo gifts the catalog seeds into an empty database (services/catalog/src/seed.rs).
const SEEDED_GIFTS: &[&str] = &[
    "confetti",
    "doughnut",
    "finger_heart",
    "galaxy",
    "lion",
    "rose",
    "universe",
];

fn catalog_command() -> Command {
    let mut command = Command::new(binary("ovation-catalog", "ovation-catalog"));
    // Only what the test sets: no settings leak in from the caller's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OVATION_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("RUST_LOG");
    command
}

async fn serves_seeded_gifts_and_stops_on_sigterm(db: TestDatabase) {
    let backend = db.backend();
    let addr = free_addr();
    let mut command = catalog_command();
    command
        .env("OVATION_LISTEN_ADDR", addr.to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("OVATION_AUTH_KEYS_FILE", ovation_testkit::test_keys_file());
    let mut catalog = ServiceProcess::start(command, addr).await;

    {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("loopback URI")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("[{backend}] cannot connect to {addr}: {e}"));
        let viewer = ovation_testkit::token("alice", &[ovation_auth::Role::Viewer]);
        let mut client =
            CatalogServiceClient::with_interceptor(channel, ovation_testkit::Bearer::new(&viewer));
        let gifts = client
            .list_gifts(ListGiftsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "[{backend}] ListGifts failed: {e}\nstderr:\n{}",
                    catalog.stderr()
                )
            })
            .into_inner();
        let ids: Vec<&str> = gifts.gifts.iter().map(|g| g.gift_id.as_str()).collect();
        assert_eq!(
            ids, SEEDED_GIFTS,
            "[{backend}] ListGifts of a fresh catalog"
        );
        assert!(
            gifts.next_page_token.is_empty(),
            "[{backend}] one page holds all"
        );
        let rose = &gifts.gifts[SEEDED_GIFTS.iter().position(|&id| id == "rose").unwrap()];
        assert_eq!(
            (
                rose.name.as_str(),
                rose.coin_price,
                rose.version,
                rose.enabled
            ),
            ("Rose", 1, 1, true),
            "[{backend}] the seeded rose"
        );
        // The client's connection closes here, before the shutdown.
    }

    let status = catalog
        .terminate(EXIT_BOUND)
        .await
        .unwrap_or_else(|e| panic!("[{backend}] after SIGTERM: {e}"));
    let stderr = catalog.stderr();
    assert!(
        status.success(),
        "[{backend}] SIGTERM should stop the catalog with exit status 0, got {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "[{backend}] the catalog panicked; stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn catalog_binary_serves_seeded_gifts_and_stops_on_sigterm_sqlite() {
    serves_seeded_gifts_and_stops_on_sigterm(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn catalog_binary_serves_seeded_gifts_and_stops_on_sigterm_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    serves_seeded_gifts_and_stops_on_sigterm(db).await;
}

#[tokio::test]
async fn catalog_binary_exits_with_a_clear_error_when_postgres_is_unreachable() {
    // Nothing listens on port 1. The password must not appear in any output.
    let url = "postgres://postgres:hunter2@127.0.0.1:1/nowhere";
    let mut command = catalog_command();
    command
        .env("OVATION_LISTEN_ADDR", free_addr().to_string())
        .env("OVATION_DATABASE_URL", url)
        .env("OVATION_DB_CONNECT_TIMEOUT_MS", "500")
        // Logging off: the reason must reach stderr even when nobody reads the logs.
        .env("RUST_LOG", "off");
    let mut catalog = ServiceProcess::spawn(command).expect("ovation-catalog spawns");
    let status = catalog
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|e| panic!("ovation-catalog with an unreachable database: {e}"));
    let stderr = catalog.stderr();

    assert!(
        status.code().is_some_and(|code| code != 0),
        "expected a non-zero exit code, got {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "start-up failure must not be a panic; stderr:\n{stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("database") && stderr.contains("127.0.0.1:1/nowhere"),
        "stderr should say the database (127.0.0.1:1/nowhere) is unreachable; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("hunter2") && !catalog.stdout().contains("hunter2"),
        "the database password leaked into the output; stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn catalog_binary_refuses_to_start_without_auth_keys() {
    let db = TestDatabase::sqlite();
    let mut command = catalog_command();
    command
        .env("OVATION_LISTEN_ADDR", free_addr().to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("RUST_LOG", "off");
    let mut catalog = ServiceProcess::spawn(command).expect("ovation-catalog spawns");
    let status = catalog
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|e| panic!("ovation-catalog without keys: {e}"));
    let stderr = catalog.stderr();
    assert!(
        status.code().is_some_and(|code| code != 0),
        "expected a non-zero exit code, got {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("OVATION_AUTH_KEYS_FILE") && !stderr.contains("panicked"),
        "stderr should say how to configure keys; stderr:\n{stderr}"
    );
}

/// The migration Job and the replicas behind it: `--migrate-only` migrates and exits 0;
/// with `OVATION_RUN_MIGRATIONS=false` a service refuses an unmigrated database and serves
/// a migrated one.
#[tokio::test]
async fn migrations_run_as_a_job_and_replicas_require_them() {
    let db = TestDatabase::sqlite();
    let keys = ovation_testkit::test_keys_file();

    let mut unmigrated = catalog_command();
    unmigrated
        .env("OVATION_LISTEN_ADDR", free_addr().to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("OVATION_AUTH_KEYS_FILE", &keys)
        .env("OVATION_RUN_MIGRATIONS", "false")
        .env("RUST_LOG", "off");
    let mut refused = ServiceProcess::spawn(unmigrated).expect("ovation-catalog spawns");
    let status = refused.wait_exit(EXIT_BOUND).await.expect("it exits");
    assert!(
        status.code().is_some_and(|c| c != 0) && refused.stderr().contains("--migrate-only"),
        "an unmigrated database is refused with a pointer to the job: {status}\n{}",
        refused.stderr()
    );

    let mut job = catalog_command();
    job.arg("--migrate-only")
        .env("OVATION_LISTEN_ADDR", free_addr().to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("OVATION_AUTH_KEYS_FILE", &keys);
    let mut job = ServiceProcess::spawn(job).expect("the job spawns");
    let status = job.wait_exit(EXIT_BOUND).await.expect("the job exits");
    assert_eq!(
        status.code(),
        Some(0),
        "the migration job succeeds: {}",
        job.stderr()
    );

    let addr = free_addr();
    let mut replica = catalog_command();
    replica
        .env("OVATION_LISTEN_ADDR", addr.to_string())
        .env("OVATION_DATABASE_URL", db.url())
        .env("OVATION_AUTH_KEYS_FILE", &keys)
        .env("OVATION_RUN_MIGRATIONS", "false");
    let mut replica = ServiceProcess::start(replica, addr).await;
    replica
        .terminate(EXIT_BOUND)
        .await
        .expect("the replica stops");
}
