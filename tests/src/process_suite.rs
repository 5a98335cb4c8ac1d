//! The whole suite as separate processes: catalog, wallet, payout and one or more gifting
//! replicas, each its own binary on an ephemeral loopback port with its own database (all
//! SQLite or all PostgreSQL; gifting replicas share one), configured only through
//! environment variables, the way containers run them. Plus what the fault tests do to it:
//! kill and restart a service on the same port and database, run a load of concurrent
//! SendGifts, wait for every saga to end, and run the real `ovation audit`.
//!
//! Every wait is bounded; a test that fails says why and shows the services' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::gifting as pb;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout as payout_pb;
use ovation_testkit::{
    Bearer, GiftingClient, PayoutClient, SuiteClients, TestDatabase, gift_request, lazy_channel,
    test_keys_file, token,
};
use tokio::process::Command;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::{EXIT_BOUND, ServiceProcess, binary, free_addr};

/// Longest the sagas of a test may take to end after the fault is over.
pub const SETTLE_BOUND: Duration = Duration::from_secs(90);
/// Longest one gift of a load may take to get an answer (retries included).
pub const SEND_BOUND: Duration = Duration::from_secs(90);
/// Longest a test waits for a load to reach a point (N gifts answered).
pub const PROGRESS_BOUND: Duration = Duration::from_secs(120);
/// Longest the replay of a stream's feed may take.
pub const FEED_BOUND: Duration = Duration::from_secs(30);
/// Longest `ovation audit` may run.
pub const AUDIT_BOUND: Duration = Duration::from_secs(60);
/// Between two reads of a polled condition (the read is the synchronisation).
const POLL: Duration = Duration::from_millis(50);
/// Lines of each service's log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

pub const PENDING: i32 = pb::SagaStatus::Pending as i32;
pub const COMPLETED: i32 = pb::SagaStatus::Completed as i32;
pub const REJECTED: i32 = pb::SagaStatus::Rejected as i32;
pub const COMPENSATED: i32 = pb::SagaStatus::Compensated as i32;
pub const NEEDS_OPERATOR: i32 = pb::SagaStatus::NeedsOperator as i32;

/// Two tests of `$scenario` (an `async fn(Backend)`): `$sqlite` on SQLite and `$postgres` on
/// PostgreSQL (which testkit skips without a server, and fails under CI without one).
#[macro_export]
macro_rules! on_sqlite_and_postgres {
    ($scenario:ident, $sqlite:ident, $postgres:ident $(,)?) => {
        #[tokio::test]
        async fn $sqlite() {
            $scenario($crate::process_suite::Backend::Sqlite).await;
        }

        #[tokio::test]
        async fn $postgres() {
            $scenario($crate::process_suite::Backend::Postgres).await;
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh database, or `None` for PostgreSQL when `OVATION_TEST_POSTGRES_URL` is unset
    /// (testkit says so on stderr).
    pub async fn database(self) -> Option<TestDatabase> {
        match self {
            Backend::Sqlite => Some(TestDatabase::sqlite()),
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ovation-e2e-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One service binary: where it listens, how it is configured, and its current process
/// (none while it is down). Restarts reuse the address and the configuration, so the
/// same port and the same database.
pub struct Node {
    pub name: String,
    package: &'static str,
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    process: Option<ServiceProcess>,
    /// stderr of earlier incarnations, for failure reports.
    past_logs: Vec<String>,
}

impl Node {
    fn new(name: impl Into<String>, package: &'static str, env: Vec<(String, String)>) -> Node {
        Node {
            name: name.into(),
            package,
            addr: free_addr(),
            env,
            process: None,
            past_logs: Vec::new(),
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(binary(self.package, self.package));
        clean_env(&mut command);
        command
            .env("OVATION_LISTEN_ADDR", self.addr.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Starts the binary and waits until it reports SERVING.
    pub async fn start(&mut self) {
        assert!(self.process.is_none(), "{} is already running", self.name);
        let command = self.command();
        self.process = Some(ServiceProcess::start(command, self.addr).await);
    }

    /// The OS process id of the running incarnation.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServiceProcess::id)
    }

    /// SIGKILL, and wait until the process is gone.
    pub async fn kill_hard(&mut self) {
        let mut process = self
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        process
            .kill_hard(EXIT_BOUND)
            .await
            .unwrap_or_else(|e| panic!("SIGKILL of {}: {e}", self.name));
        self.past_logs.push(process.stderr());
    }

    /// SIGTERM, wait for the exit, and insist it was clean (exit status 0, no panic).
    pub async fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let status = process
            .terminate(EXIT_BOUND)
            .await
            .unwrap_or_else(|e| panic!("SIGTERM of {}: {e}", self.name));
        let stderr = process.stderr();
        self.past_logs.push(stderr.clone());
        assert!(
            status.success() && !stderr.contains("panicked"),
            "{} did not stop cleanly on SIGTERM ({status}); stderr:\n{}",
            self.name,
            tail(&stderr, LOG_TAIL_LINES)
        );
    }

    /// Sets (or with `None` removes) a variable of this node's environment, for its next
    /// start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push(kv(key, value));
        }
    }

    /// Waits up to `bound` for the running process to end by itself (a crash point);
    /// returns what it wrote to stderr.
    pub async fn wait_crashed(&mut self, bound: Duration) -> String {
        let mut process = self
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let status = process
            .wait_exit(bound)
            .await
            .unwrap_or_else(|e| panic!("{} did not crash in time: {e}", self.name));
        let stderr = process.stderr();
        self.past_logs.push(stderr.clone());
        assert!(
            !status.success(),
            "{} exited cleanly instead of crashing",
            self.name
        );
        stderr
    }

    /// Everything every incarnation wrote to stderr.
    pub fn logs(&self) -> String {
        let mut all = self.past_logs.join("\n----- (restarted) -----\n");
        if let Some(p) = &self.process {
            if !all.is_empty() {
                all.push_str("\n----- (restarted) -----\n");
            }
            all.push_str(&p.stderr());
        }
        all
    }
}

/// Removes every setting the caller's environment could leak into a service.
pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("OVATION_") || key_text.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How a suite is started.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub gifting_replicas: usize,
    /// Added to every service's environment (e.g. the OTLP endpoint).
    pub env: Vec<(String, String)>,
    /// Start every gifting replica at once on the fresh database; by default the others
    /// start once the first serves (its migrations applied).
    pub gifting_start_together: bool,
    /// Gifting retries saga steps with the shipped settings (attempt budget, backoff, the
    /// saga's maximum age) instead of the suite's short ones, so a test proves what ships.
    pub gifting_shipped_retries: bool,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            gifting_replicas: 1,
            env: Vec::new(),
            gifting_start_together: false,
            gifting_shipped_retries: false,
        }
    }
}

/// The four services as processes. Fields drop in order: processes first (killed), then
/// their databases and directories.
pub struct Suite {
    pub catalog: Node,
    pub wallet: Node,
    pub payout: Node,
    pub gifting: Vec<Node>,
    /// Clients of catalog, wallet, payout and gifting replica 0, as the roles tests play.
    pub clients: SuiteClients,
    pub backend: &'static str,
    _dbs: Vec<TestDatabase>,
    _sandbox: TempDir,
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Gifting's retries, leases and waits in these tests.
fn gifting_pace(options: &SuiteOptions) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if !options.gifting_shipped_retries {
        env.extend([
            // A budget that outlasts every outage of these tests: a saga waits, it is
            // never handed to an operator here.
            kv("OVATION_GIFTING_RETRY_ATTEMPTS_MAX", "100000"),
            kv("OVATION_GIFTING_RETRY_BASE_MS", "20"),
            kv("OVATION_GIFTING_RETRY_MAX_MS", "250"),
        ]);
    }
    env.extend([
        // A dead replica's sagas are taken over soon.
        kv("OVATION_GIFTING_LEASE_MS", "2000"),
        kv("OVATION_GIFTING_RECOVERY_INTERVAL_MS", "100"),
        kv("OVATION_GIFTING_STEP_TIMEOUT_MS", "2000"),
        // During an outage SendGift answers PENDING after a second.
        kv("OVATION_GIFTING_SEND_WAIT_MS", "1000"),
        // The loads send one viewer's gifts to one creator far faster than a person would;
        // the velocity limit has tests of its own (services/gifting/tests/gifting/velocity.rs).
        kv(
            "OVATION_GIFTING_GIFTS_PER_SENDER_CREATOR_PER_MINUTE_MAX",
            "0",
        ),
    ]);
    env
}

/// Builds (or checks) every binary once, before anything is timed by [`crate::START_BOUND`].
fn build_binaries() {
    for package in [
        "ovation-catalog",
        "ovation-wallet",
        "ovation-payout",
        "ovation-gifting",
    ] {
        binary(package, package);
    }
    binary("ovation", "ovation");
}

impl Suite {
    /// Starts catalog, then wallet, payout and the gifting replicas (concurrently), each
    /// its own process with its own database of `backend` (the replicas share one).
    /// `None` when `backend` is PostgreSQL and no server is configured.
    pub async fn start(backend: Backend, options: SuiteOptions) -> Option<Suite> {
        let catalog_db = backend.database().await?;
        let wallet_db = backend.database().await?;
        let payout_db = backend.database().await?;
        let gifting_db = backend.database().await?;
        let sandbox = TempDir::new("payout-sandbox");
        let keys = test_keys_file().display().to_string();
        let common = |db: &TestDatabase| {
            let mut env = vec![
                kv("OVATION_DATABASE_URL", db.url()),
                kv("OVATION_AUTH_KEYS_FILE", &keys),
                kv("OVATION_SERVICE_KEYS_FILE", &keys),
                // One viewer sends many gifts: measure the saga, not the limiter.
                kv("OVATION_RATE_LIMIT_PER_SECOND", "100000"),
                kv("OVATION_RATE_LIMIT_BURST", "100000"),
                kv("OVATION_SHUTDOWN_GRACE_MS", "5000"),
                // Tests run side by side on one PostgreSQL server: a small pool each keeps
                // them under its connection limit (the loads are modest).
                kv("OVATION_DB_CONNECTIONS_MAX", "4"),
                kv("RUST_LOG", "info"),
            ];
            env.extend(options.env.iter().cloned());
            env
        };
        let mut catalog = Node::new("catalog", "ovation-catalog", common(&catalog_db));
        let catalog_url = catalog.url();
        let mut payout_env = common(&payout_db);
        payout_env.extend([
            kv("OVATION_CATALOG_URL", &catalog_url),
            // The sandbox payout provider: the suite tests our side, not a payout rail.
            kv("OVATION_ALLOW_SANDBOX", "true"),
            kv(
                "OVATION_PAYOUT_SANDBOX_DIR",
                sandbox.0.display().to_string(),
            ),
        ]);
        let mut payout = Node::new("payout", "ovation-payout", payout_env);
        let mut wallet_env = common(&wallet_db);
        wallet_env.extend([
            kv("OVATION_CATALOG_URL", &catalog_url),
            // Clawback orders of reversed purchases are delivered there.
            kv("OVATION_PAYOUT_URL", payout.url()),
            // The suite pays through the sandbox, which runs only where allowed.
            kv("OVATION_PAYMENT_PROVIDERS", "sandbox"),
            kv("OVATION_ALLOW_SANDBOX", "true"),
        ]);
        let mut wallet = Node::new("wallet", "ovation-wallet", wallet_env);
        let mut gifting_env = common(&gifting_db);
        gifting_env.extend([
            kv("OVATION_CATALOG_URL", &catalog_url),
            kv("OVATION_WALLET_URL", wallet.url()),
            kv("OVATION_PAYOUT_URL", payout.url()),
        ]);
        gifting_env.extend(gifting_pace(&options));
        let mut gifting: Vec<Node> = (0..options.gifting_replicas.max(1))
            .map(|i| {
                Node::new(
                    format!("gifting-{i}"),
                    "ovation-gifting",
                    gifting_env.clone(),
                )
            })
            .collect();

        build_binaries();
        catalog.start().await;
        let (first, others) = gifting.split_at_mut(1);
        let mut starts: Vec<_> = vec![wallet.start(), payout.start(), first[0].start()];
        if options.gifting_start_together {
            starts.extend(others.iter_mut().map(Node::start));
            join_all(starts).await;
        } else {
            join_all(starts).await;
            join_all(others.iter_mut().map(Node::start).collect()).await;
        }
        let clients = SuiteClients {
            catalog: catalog.url(),
            wallet: wallet.url(),
            payout: payout.url(),
            gifting: gifting[0].url(),
        };
        Some(Suite {
            catalog,
            wallet,
            payout,
            gifting,
            clients,
            backend: match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            },
            _dbs: vec![catalog_db, wallet_db, payout_db, gifting_db],
            _sandbox: sandbox,
        })
    }

    fn nodes(&self) -> Vec<&Node> {
        let mut all = vec![&self.catalog, &self.wallet, &self.payout];
        all.extend(self.gifting.iter());
        all
    }

    /// The last lines of every service's log.
    pub fn logs(&self) -> String {
        self.nodes()
            .iter()
            .map(|n| {
                format!(
                    "===== {} ({}) =====\n{}",
                    n.name,
                    n.addr,
                    tail(&n.logs(), LOG_TAIL_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics with `message`, the backend and the services' logs.
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        panic!(
            "[{}] {message}\n\nservice logs (last {LOG_TAIL_LINES} lines each):\n{}",
            self.backend,
            self.logs()
        )
    }

    /// Stops every service with SIGTERM (gifting first), each exiting cleanly.
    pub async fn stop(mut self) {
        for g in &mut self.gifting {
            g.stop().await;
        }
        self.payout.stop().await;
        self.wallet.stop().await;
        self.catalog.stop().await;
    }

    pub fn gifting_client(&self, replica: usize, token: &str) -> GiftingClient {
        GiftingServiceClient::with_interceptor(
            lazy_channel(&self.gifting[replica].url()),
            Bearer::new(token),
        )
    }

    pub fn gifting_as(&self, user: &str) -> GiftingClient {
        self.gifting_client(0, &token(user, &[Role::Viewer]))
    }

    pub fn gifting_admin(&self, replica: usize) -> GiftingClient {
        self.gifting_client(replica, &admin_token())
    }

    /// Sends `request` as its sender through gifting replica 0; the receipt (an error fails
    /// the test).
    pub async fn receipt_of(
        &self,
        request: impl tonic::IntoRequest<pb::SendGiftRequest>,
    ) -> pb::GiftReceipt {
        let request = request.into_request();
        let sent = request.get_ref();
        let (key, sender) = (sent.idempotency_key.clone(), sent.sender_user_id.clone());
        self.gifting_as(&sender)
            .send_gift(request)
            .await
            .unwrap_or_else(|e| self.fail(format!("SendGift {key}: {e}")))
            .into_inner()
            .receipt
            .unwrap_or_else(|| self.fail(format!("SendGift {key} answered without a receipt")))
    }

    /// Payout as the operator "ops".
    pub async fn payout_admin(&self) -> PayoutClient {
        self.clients.payout(Bearer::new(&admin_token())).await
    }

    /// Opens `user`'s account and buys `package`; returns the coins credited.
    pub async fn funded_viewer(&self, user: &str, package: &str) -> i64 {
        let coins = self
            .clients
            .funded_viewer(user, package)
            .await
            .unwrap_or_else(|e| self.fail(format!("funding {user} with {package}: {e}")));
        assert!(coins > 0, "{user} got no coins for {package}");
        coins
    }

    /// Registers creator `id` with payout (as the creator).
    pub async fn creator(&self, id: &str) {
        if let Err(e) = self.clients.register_creator(id).await {
            self.fail(format!("RegisterCreator {id}: {e}"));
        }
    }

    pub async fn coins(&self, user: &str) -> i64 {
        self.clients
            .coins(user)
            .await
            .unwrap_or_else(|e| self.fail(format!("GetBalance {user}: {e}")))
    }

    /// A creator's diamonds not cashed out (pending and available); 0 for one payout does
    /// not know.
    pub async fn diamonds(&self, creator: &str) -> i64 {
        match self.clients.diamonds(creator).await {
            Ok(diamonds) => diamonds,
            Err(e) if e.code() == Code::NotFound => 0,
            Err(e) => self.fail(format!("GetDiamondBalance {creator}: {e}")),
        }
    }

    /// Every saga, read through gifting replica `replica`'s admin ListSagas (all pages).
    pub async fn sagas(&self, replica: usize) -> Result<Vec<pb::Saga>, tonic::Status> {
        let mut client = self.gifting_admin(replica);
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_sagas(pb::ListSagasRequest {
                    statuses: vec![],
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            all.extend(page.sagas);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// The payout credits whose operation ids are in `ids` (admin ListCredits, which
    /// answers up to 500 ids at once, unpaginated).
    pub async fn credits_of(&self, ids: &[String]) -> Vec<payout_pb::Credit> {
        let mut client = self.payout_admin().await;
        let mut all = Vec::new();
        for chunk in ids.chunks(500) {
            let page = client
                .list_credits(payout_pb::ListCreditsRequest {
                    operation_ids: chunk.to_vec(),
                    page_size: 0,
                    page_token: String::new(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| self.fail(format!("ListCredits: {e}")))
                .into_inner();
            all.extend(page.credits);
        }
        all
    }

    /// Polls ListSagas until no saga is PENDING (and, when given, there are `expected`
    /// sagas); returns them. Fails at once on a saga handed to an operator, and with the
    /// sagas still pending when `bound` passes.
    pub async fn settle(
        &self,
        replica: usize,
        expected: Option<usize>,
        bound: Duration,
    ) -> Vec<pb::Saga> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let last = match self.sagas(replica).await {
                Ok(sagas) => {
                    self.assert_none_for_an_operator(
                        &sagas,
                        "while settling (retry budget 100000, so something refused definitely)",
                    );
                    let pending: Vec<&pb::Saga> =
                        sagas.iter().filter(|s| status(s) == PENDING).collect();
                    let count_ok = expected.is_none_or(|n| n == sagas.len());
                    if pending.is_empty() && count_ok {
                        return sagas;
                    }
                    format!(
                        "{} sagas ({} expected), {} still PENDING: {}",
                        sagas.len(),
                        expected.map_or("any".into(), |n| n.to_string()),
                        pending.len(),
                        describe(&pending)
                    )
                }
                Err(e) => format!("ListSagas failed: {e}"),
            };
            if tokio::time::Instant::now() >= deadline {
                self.fail(format!(
                    "the sagas did not all end within {bound:?}: {last}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails, naming them, if any of `sagas` was handed to an operator (`when` says at
    /// which point of the test).
    pub fn assert_none_for_an_operator(&self, sagas: &[pb::Saga], when: &str) {
        let stuck: Vec<&pb::Saga> = sagas
            .iter()
            .filter(|s| status(s) == NEEDS_OPERATOR)
            .collect();
        if !stuck.is_empty() {
            self.fail(format!(
                "{when}, {} sagas were handed to an operator:{}",
                stuck.len(),
                describe(&stuck)
            ));
        }
    }

    /// Runs the real `ovation audit` against this suite (through gifting replica 0);
    /// returns whether it passed and what it printed.
    pub async fn audit(&self) -> (bool, String) {
        let mut command = Command::new(binary("ovation", "ovation"));
        clean_env(&mut command);
        command
            .arg("audit")
            .args(["--wallet-url", &self.wallet.url()])
            .args(["--payout-url", &self.payout.url()])
            .args(["--gifting-url", &self.gifting[0].url()])
            .args(["--token", &admin_token()])
            .kill_on_drop(true);
        let output = tokio::time::timeout(AUDIT_BOUND, command.output())
            .await
            .unwrap_or_else(|_| self.fail(format!("ovation audit ran longer than {AUDIT_BOUND:?}")))
            .unwrap_or_else(|e| self.fail(format!("cannot run ovation audit: {e}")));
        let printed = format!(
            "exit: {}\nstdout:\n{}stderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), printed)
    }

    /// `ovation audit` must exit 0, report no violation and no unfinished saga.
    pub async fn assert_audit_clean(&self) {
        let (ok, printed) = self.audit().await;
        if !ok || !printed.contains("audit: no violation") || printed.contains("not terminal") {
            self.fail(format!("ovation audit is not clean:\n{printed}"));
        }
    }

    /// The live feed of `stream`, replayed from its first event, shows every COMPLETED
    /// saga of the stream exactly once, with its coins and diamonds, and nothing else (the
    /// outbox: an event is never lost and never invented, whatever crashed meanwhile).
    pub async fn assert_feed_matches(&self, sagas: &[pb::Saga], stream: &str) {
        let completed: BTreeMap<&str, &pb::GiftReceipt> = sagas
            .iter()
            .filter_map(|s| s.receipt.as_ref())
            .filter(|r| r.status == COMPLETED && r.stream_id == stream)
            .map(|r| (r.saga_id.as_str(), r))
            .collect();
        if completed.is_empty() {
            return;
        }
        let mut client = self.gifting_as("feed-watcher");
        let mut feed = client
            .watch_stream_gifts(pb::WatchStreamGiftsRequest {
                stream_id: stream.into(),
                resume_cursor: String::new(),
                from_beginning: true,
            })
            .await
            .unwrap_or_else(|e| self.fail(format!("WatchStreamGifts: {e}")))
            .into_inner();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let read = tokio::time::timeout(FEED_BOUND, async {
            while seen.len() < completed.len() {
                let event = match feed.message().await {
                    Ok(Some(m)) => m.event.unwrap_or_default(),
                    Ok(None) => return Err("the feed ended".to_owned()),
                    Err(e) => return Err(format!("the feed failed: {e}")),
                };
                let Some(r) = completed.get(event.saga_id.as_str()) else {
                    return Err(format!(
                        "the feed shows a gift whose saga did not complete: {event:?}"
                    ));
                };
                if !seen.insert(event.saga_id.clone()) {
                    return Err(format!("the feed shows a gift twice: {event:?}"));
                }
                if (event.coins, event.diamonds) != (r.total_coins, r.diamonds_credited) {
                    return Err(format!(
                        "the feed's event disagrees with its saga: {event:?} vs {r:?}"
                    ));
                }
            }
            Ok(())
        })
        .await;
        let outcome = read.unwrap_or_else(|_| Err(format!("no more events within {FEED_BOUND:?}")));
        if let Err(e) = outcome {
            let missing: Vec<&&str> = completed.keys().filter(|id| !seen.contains(**id)).collect();
            self.fail(format!(
                "feed of {stream}: {e}; {} of {} completed gifts seen, missing e.g. {:?}",
                seen.len(),
                completed.len(),
                &missing[..missing.len().min(5)]
            ));
        }
    }

    /// Cross-service bookkeeping from the outside: each viewer's coins are what they
    /// bought minus what their COMPLETED gifts cost; each creator's diamonds are what
    /// their COMPLETED gifts credited; nothing went to the unregistered creator.
    pub async fn assert_balances(
        &self,
        sagas: &[pb::Saga],
        funded: &BTreeMap<String, i64>,
        creators: &[&str],
    ) {
        let mut spent: BTreeMap<&str, i64> = BTreeMap::new();
        let mut earned: BTreeMap<&str, i64> = BTreeMap::new();
        for s in sagas {
            let r = s.receipt.as_ref().expect("a saga has a receipt");
            if r.status == COMPLETED {
                *spent.entry(r.sender_user_id.as_str()).or_default() += r.total_coins;
                *earned.entry(r.creator_id.as_str()).or_default() += r.diamonds_credited;
            } else if r.coins_spent != 0 || r.diamonds_credited != 0 {
                self.fail(format!("a saga that did not complete moved value: {r:?}"));
            }
        }
        for (user, bought) in funded {
            let expected = bought - spent.get(user.as_str()).copied().unwrap_or(0);
            let actual = self.coins(user).await;
            if actual != expected {
                self.fail(format!(
                    "{user} bought {bought} coins and completed gifts worth {}, so should \
                     have {expected}, but the wallet says {actual}",
                    spent.get(user.as_str()).copied().unwrap_or(0)
                ));
            }
        }
        for creator in creators {
            let expected = earned.get(creator).copied().unwrap_or(0);
            let actual = self.diamonds(creator).await;
            if actual != expected {
                self.fail(format!(
                    "{creator}'s completed gifts credited {expected} diamonds, payout says {actual}"
                ));
            }
        }
    }
}

/// Polls `futures` concurrently until all are done (no `futures` dependency needed).
async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

pub fn admin_token() -> String {
    token("ops", &[Role::Admin])
}

pub fn status(s: &pb::Saga) -> i32 {
    s.receipt.as_ref().map_or(0, |r| r.status)
}

/// One line per saga (at most 10): id, status, step, attempts, last error, lease owner.
pub fn describe(sagas: &[&pb::Saga]) -> String {
    let mut lines: Vec<String> = sagas
        .iter()
        .take(10)
        .map(|s| {
            let r = s.receipt.clone().unwrap_or_default();
            format!(
                "\n  {} {:?} step {:?} attempts {} last_error {:?} lease {:?} ({} → {} {} x{})",
                r.saga_id,
                pb::SagaStatus::try_from(r.status).unwrap_or_default(),
                pb::SagaStep::try_from(s.step).unwrap_or_default(),
                s.attempts,
                s.last_error,
                s.lease_owner,
                r.sender_user_id,
                r.creator_id,
                r.gift_id,
                r.quantity
            )
        })
        .collect();
    if sagas.len() > 10 {
        lines.push(format!("\n  … and {} more", sagas.len() - 10));
    }
    lines.concat()
}

/// The stream every gift of a load goes to.
pub const LOAD_STREAM: &str = "stream-e2e";

/// One gift of a load, sent to one or several gifting replicas concurrently (the same
/// request, the same idempotency key).
#[derive(Clone, Debug)]
pub struct GiftPlan {
    pub key: String,
    pub sender: String,
    pub creator: String,
    pub gift: String,
    pub quantity: i32,
    pub replicas: Vec<usize>,
}

impl GiftPlan {
    /// The SendGift of this gift, on [`LOAD_STREAM`].
    pub fn request(&self) -> pb::SendGiftRequest {
        gift_request(
            LOAD_STREAM,
            &self.key,
            &self.sender,
            &self.creator,
            &self.gift,
            self.quantity,
        )
    }
}

/// What one gift of a load got: a receipt per replica it was sent to; errors retried
/// (transport errors while a replica was down); a final error if it never got an answer.
#[derive(Clone, Debug)]
pub struct Sent {
    pub plan: GiftPlan,
    pub receipts: Vec<pb::GiftReceipt>,
    pub retried: Vec<String>,
    pub failed: Option<String>,
    /// The load's phase (see [`Load::set_phase`]) when the gift was first sent.
    pub phase: usize,
}

/// A load of SendGifts running in the background.
pub struct Load {
    answered: watch::Receiver<usize>,
    phase: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Sent>>,
}

/// The standard load: `viewers` × `per_viewer` gifts, a mix of cheap and dear gifts (so
/// some are refused for lack of coins), every tenth to `ghost` (never registered with
/// payout, so those are compensated), the rest spread over `creators`.
pub fn mixed_plan(
    tag: &str,
    viewers: &[&str],
    creators: &[&str],
    ghost: &str,
    per_viewer: usize,
) -> Vec<GiftPlan> {
    let mut plan = Vec::new();
    for j in 0..per_viewer {
        for (v, viewer) in viewers.iter().enumerate() {
            let creator = if j % 10 == 9 {
                ghost
            } else {
                creators[(j + v) % creators.len()]
            };
            let gift = match j % 4 {
                0 => "doughnut",
                1 => "finger_heart",
                _ => "rose",
            };
            plan.push(GiftPlan {
                key: format!("{tag}-{viewer}-{j}"),
                sender: (*viewer).to_owned(),
                creator: creator.to_owned(),
                gift: gift.to_owned(),
                quantity: 1 + (j % 2) as i32,
                replicas: vec![0],
            });
        }
    }
    plan
}

impl Load {
    /// Sends `plan` with `concurrency` workers, each gift to its replicas; a gift whose
    /// call fails with a transport error (a replica down) is re-sent with the same key to
    /// the same replica until it answers, within [`SEND_BOUND`].
    pub fn start(suite: &Suite, plan: Vec<GiftPlan>, concurrency: usize) -> Load {
        let urls: Vec<String> = suite.gifting.iter().map(Node::url).collect();
        let (tx, answered) = watch::channel(0usize);
        let phase = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(Mutex::new(
            plan.into_iter().collect::<std::collections::VecDeque<_>>(),
        ));
        let results = Arc::new(Mutex::new(Vec::new()));
        let tx = Arc::new(tx);
        let phase_seen = phase.clone();
        let task = tokio::spawn(async move {
            // One client per replica per sender, shared by the workers.
            let mut clients: BTreeMap<(usize, String), GiftingClient> = BTreeMap::new();
            {
                let q = queue.lock().await;
                for g in q.iter() {
                    for &r in &g.replicas {
                        clients.entry((r, g.sender.clone())).or_insert_with(|| {
                            GiftingServiceClient::with_interceptor(
                                lazy_channel(&urls[r]),
                                Bearer::new(&token(&g.sender, &[Role::Viewer])),
                            )
                        });
                    }
                }
            }
            let clients = Arc::new(clients);
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (queue, results, tx, clients, phase) = (
                    queue.clone(),
                    results.clone(),
                    tx.clone(),
                    clients.clone(),
                    phase_seen.clone(),
                );
                workers.spawn(async move {
                    loop {
                        let Some(plan) = queue.lock().await.pop_front() else {
                            return;
                        };
                        let phase = phase.load(Ordering::SeqCst);
                        let sent = send_one(&clients, plan, phase).await;
                        results.lock().await.push(sent);
                        tx.send_modify(|n| *n += 1);
                    }
                });
            }
            while let Some(joined) = workers.join_next().await {
                joined.expect("a load worker panicked");
            }
            std::mem::take(&mut *results.lock().await)
        });
        Load {
            answered,
            phase,
            task,
        }
    }

    /// Marks gifts sent from now on with `phase`.
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// How many gifts have their answers.
    pub fn answered(&self) -> usize {
        *self.answered.borrow()
    }

    /// Waits until at least `n` gifts have their answers.
    pub async fn wait_answered(&mut self, suite: &Suite, n: usize) {
        let reached = tokio::time::timeout(PROGRESS_BOUND, async {
            // An error means the load ended: `finish` reports what it got.
            let _ = self.answered.wait_for(|&a| a >= n).await;
        })
        .await;
        if reached.is_err() {
            suite.fail(format!(
                "the load did not get {n} answers within {PROGRESS_BOUND:?} (got {})",
                self.answered()
            ));
        }
    }

    /// Waits for the whole load; every gift must have been answered.
    pub async fn finish(self, suite: &Suite) -> Vec<Sent> {
        let sent = match tokio::time::timeout(PROGRESS_BOUND, self.task).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => suite.fail(format!("the load task failed: {e}")),
            Err(_) => suite.fail(format!("the load did not finish within {PROGRESS_BOUND:?}")),
        };
        let failed: Vec<String> = sent
            .iter()
            .filter_map(|s| s.failed.as_ref().map(|e| format!("{}: {e}", s.plan.key)))
            .collect();
        if !failed.is_empty() {
            suite.fail(format!(
                "{} gifts got an error instead of a receipt, e.g. {:?}",
                failed.len(),
                &failed[..failed.len().min(5)]
            ));
        }
        sent
    }
}

/// Errors a client retries with the same key: the replica is down or the connection broke.
fn transport_error(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

async fn send_one(
    clients: &BTreeMap<(usize, String), GiftingClient>,
    plan: GiftPlan,
    phase: usize,
) -> Sent {
    let deadline = tokio::time::Instant::now() + SEND_BOUND;
    let request = plan.request();
    let mut calls = tokio::task::JoinSet::new();
    for &replica in &plan.replicas {
        let mut client = clients[&(replica, plan.sender.clone())].clone();
        let request = request.clone();
        calls.spawn(async move {
            let mut retried = Vec::new();
            loop {
                let mut call = tonic::Request::new(request.clone());
                call.set_timeout(Duration::from_secs(10));
                match client.send_gift(call).await {
                    Ok(reply) => {
                        return (
                            reply
                                .into_inner()
                                .receipt
                                .ok_or_else(|| "no receipt".to_owned()),
                            retried,
                        );
                    }
                    Err(status)
                        if transport_error(&status) && tokio::time::Instant::now() < deadline =>
                    {
                        retried.push(format!(
                            "replica {replica}: {:?}: {}",
                            status.code(),
                            status.message()
                        ));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(status) => {
                        return (
                            Err(format!(
                                "replica {replica}: {:?}: {}",
                                status.code(),
                                status.message()
                            )),
                            retried,
                        );
                    }
                }
            }
        });
    }
    let mut sent = Sent {
        plan,
        receipts: Vec::new(),
        retried: Vec::new(),
        failed: None,
        phase,
    };
    while let Some(joined) = calls.join_next().await {
        let (outcome, retried) = joined.expect("a send task panicked");
        sent.retried.extend(retried);
        match outcome {
            Ok(receipt) => sent.receipts.push(receipt),
            Err(e) => sent.failed = Some(e),
        }
    }
    sent
}

/// Checks that hold after any load: each gift's receipts name one saga; one saga per
/// key (`sagas` holds exactly the load's sagas plus `other_sagas` more); a receipt that
/// was already terminal when answered is what the saga ended as.
pub fn assert_one_saga_per_gift(
    suite: &Suite,
    sent: &[Sent],
    sagas: &[pb::Saga],
    other_sagas: usize,
) {
    let by_id: BTreeMap<&str, &pb::Saga> = sagas
        .iter()
        .map(|s| (s.receipt.as_ref().map_or("", |r| r.saga_id.as_str()), s))
        .collect();
    let mut ids = BTreeSet::new();
    for s in sent {
        let distinct: BTreeSet<&str> = s.receipts.iter().map(|r| r.saga_id.as_str()).collect();
        if distinct.len() != 1 {
            suite.fail(format!(
                "gift {} (sent to replicas {:?}) got receipts for {} sagas: {:?}",
                s.plan.key,
                s.plan.replicas,
                distinct.len(),
                s.receipts
            ));
        }
        let id = *distinct.first().expect("one saga");
        if !ids.insert(id.to_owned()) {
            suite.fail(format!("two gifts got the same saga {id}"));
        }
        let Some(saga) = by_id.get(id) else {
            suite.fail(format!(
                "gift {}'s saga {id} is not in ListSagas",
                s.plan.key
            ));
        };
        let final_status = status(saga);
        for r in &s.receipts {
            if r.status != PENDING && r.status != final_status {
                suite.fail(format!(
                    "gift {} was answered {:?} but its saga ended {:?}: {r:?} vs {saga:?}",
                    s.plan.key,
                    pb::SagaStatus::try_from(r.status).unwrap_or_default(),
                    pb::SagaStatus::try_from(final_status).unwrap_or_default()
                ));
            }
        }
        let rec = saga.receipt.as_ref().expect("a saga has a receipt");
        if (
            rec.sender_user_id.as_str(),
            rec.creator_id.as_str(),
            rec.gift_id.as_str(),
            rec.quantity,
        ) != (
            s.plan.sender.as_str(),
            s.plan.creator.as_str(),
            s.plan.gift.as_str(),
            s.plan.quantity,
        ) {
            suite.fail(format!(
                "gift {}'s saga is for another gift: {rec:?}",
                s.plan.key
            ));
        }
    }
    if sagas.len() != sent.len() + other_sagas {
        suite.fail(format!(
            "{} gifts (+{other_sagas} others) but {} sagas: a key made more than one",
            sent.len(),
            sagas.len()
        ));
    }
}

/// How many sagas ended each way, for test output.
pub fn tally(sagas: &[pb::Saga]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for s in sagas {
        *t.entry(format!(
            "{:?}",
            pb::SagaStatus::try_from(status(s)).unwrap_or_default()
        ))
        .or_default() += 1;
    }
    t
}
