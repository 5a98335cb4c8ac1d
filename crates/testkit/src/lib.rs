//! Test kit: what service and end-to-end tests need to run real servers against real
//! databases, and nothing else.
//!
//! - [`TestDatabase`]: a throwaway SQLite file, or a throwaway PostgreSQL database
//!   created on the server named by `OVATION_TEST_POSTGRES_URL` and dropped afterwards.
//!   [`databases`] gives both; without the variable, the PostgreSQL run is skipped and
//!   says so on stderr.
//! - [`Running`]: a service started in-process on an ephemeral loopback port, with a
//!   channel that is ready once the service reports SERVING.
//! - Auth: [`server_config`] points services at a keys file made for this test process;
//!   [`token`] mints tokens under it and [`Bearer`] attaches one to a client.
//! - Answers: [`code`], [`reason`] and [`violated_fields`] read what a call answered.
//! - With the `services` feature: [`services`] starts each service in this process,
//!   [`SuiteClients`] calls them as the roles tests play (a funded viewer, a creator, an
//!   admin), [`InProcessSuite`] runs all four together, and [`stripe_connect`] stands
//!   in for Stripe's Connect transfers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::OnceLock;

use ovation_auth::{Role, Signer};
use ovation_server::{ServerConfig, Shutdown, StartError};
use sqlx::Executor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;

mod refusal;
pub use refusal::{code, reason, violated_fields};

#[cfg(feature = "services")]
mod clients;
#[cfg(feature = "services")]
pub mod services;
#[cfg(feature = "services")]
pub mod stripe_connect;
#[cfg(feature = "services")]
mod suite;
#[cfg(feature = "services")]
pub use clients::{
    CatalogClient, GiftingClient, PayoutClient, SuiteClients, WalletClient, channel, gift_request,
    lazy_channel,
};
#[cfg(feature = "services")]
pub use suite::{InProcessSuite, Service};

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "OVATION_TEST_POSTGRES_URL";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite { dir: PathBuf },
    Postgres { server_url: String, name: String },
}

impl TestDatabase {
    /// A fresh SQLite file in its own temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = std::env::temp_dir().join(format!("ovation-test-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/test.db", dir.display());
        TestDatabase {
            url,
            kind: Kind::Sqlite { dir },
        }
    }

    /// A fresh database on the PostgreSQL server of `OVATION_TEST_POSTGRES_URL`, or
    /// `None` (with a note on stderr) when the variable is not set.
    ///
    /// Under CI (`CI=true`) a missing variable fails the test instead: a PostgreSQL run
    /// that skips itself there would pass unseen.
    pub async fn postgres() -> Option<TestDatabase> {
        let server_url = match postgres_server_url(
            std::env::var("CI").ok().as_deref(),
            std::env::var(POSTGRES_URL_VAR).ok(),
        ) {
            Ok(Some(url)) => url,
            Ok(None) => {
                eprintln!(
                    "SKIPPED: PostgreSQL run skipped because {POSTGRES_URL_VAR} is not set \
                     (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres)"
                );
                return None;
            }
            Err(refusal) => panic!("{refusal}"),
        };
        let name = format!("ovation_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let mut admin = match sqlx::AnyConnection::connect_with_url(&server_url).await {
            Ok(c) => c,
            Err(e) => panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}"),
        };
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = ovation_store::db::with_database(&server_url, &name);
        Some(TestDatabase {
            url,
            kind: Kind::Postgres { server_url, name },
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// "sqlite" or "postgres", for test output.
    pub fn backend(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres { .. } => "postgres",
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Postgres { server_url, name } => {
                // Drop is sync; run the DROP on a thread of its own with its own runtime.
                let (server_url, name) = (server_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async {
                        if let Ok(mut admin) =
                            sqlx::AnyConnection::connect_with_url(&server_url).await
                        {
                            let _ = admin
                                .execute(sqlx::AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Where PostgreSQL tests run: the server of `url`; nowhere (skip) when it is unset
/// locally; an error when it is unset under CI (`ci` is the `CI` variable: set and not
/// `false`/`0`, as CI systems set it).
pub fn postgres_server_url(
    ci: Option<&str>,
    url: Option<String>,
) -> Result<Option<String>, String> {
    let under_ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    match url.filter(|u| !u.is_empty()) {
        Some(url) => Ok(Some(url)),
        None if under_ci => Err(format!(
            "{POSTGRES_URL_VAR} is not set under CI (CI={}): PostgreSQL tests must run there, \
             not skip; .ci/run sets it",
            ci.unwrap_or_default()
        )),
        None => Ok(None),
    }
}

trait ConnectUrl: Sized {
    async fn connect_with_url(url: &str) -> Result<Self, sqlx::Error>;
}

impl ConnectUrl for sqlx::AnyConnection {
    async fn connect_with_url(url: &str) -> Result<Self, sqlx::Error> {
        use sqlx::Connection;
        sqlx::AnyConnection::connect(url).await
    }
}

/// A loopback address with a port nothing listens on now, for a service a test starts
/// later (as a separate process, or again after a restart).
///
/// The port is below Linux's ephemeral range (32768–60999): a port taken from that range
/// and let go can be picked by the OS as the local port of any outgoing connection (tests
/// connect a lot) before the service binds it. Here only another test choosing the same
/// port can collide, and the bind check makes that rarer still.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let seed = (std::process::id() as u16).wrapping_mul(7_919);
    for _ in 0..SPAN {
        let offset = seed.wrapping_add(NEXT.fetch_add(97, Ordering::Relaxed)) % SPAN;
        let addr = SocketAddr::from(([127, 0, 0, 1], LOW + offset));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
}

/// SQLite always; PostgreSQL too when `OVATION_TEST_POSTGRES_URL` is set.
pub async fn databases() -> Vec<TestDatabase> {
    let mut all = vec![TestDatabase::sqlite()];
    all.extend(TestDatabase::postgres().await);
    all
}

/// Settings for a service under test: loopback, an ephemeral port, `database_url`,
/// authentication against this process's test keys, and rate limits high enough that
/// tests measure behaviour, not the limiter.
pub fn server_config(database_url: &str) -> ServerConfig {
    let mut config = ServerConfig {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.to_owned(),
        ..ServerConfig::default()
    };
    config.args.auth.auth_keys_file = Some(test_keys().path.clone());
    config.args.auth.rate_limit_per_second = 100_000;
    config.args.auth.rate_limit_burst = 100_000;
    config
}

/// The key id of the test keys.
pub const TEST_KID: &str = "test";

struct TestKeys {
    path: PathBuf,
    /// The identity provider's key: people's roles.
    people: Signer,
    /// One key per service, granted that service's role only (as in production).
    services: Vec<(Role, Signer)>,
}

/// One keys file per test process, with random HS256 secrets: a key for people's tokens
/// (kid [`TEST_KID`]) and one per service (`test-<role>`), each bound to its role.
fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use base64::Engine;
        let encode = |secret: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(secret);
        let dir = std::env::temp_dir().join(format!("ovation-test-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("keys");
        let people_secret: [u8; 32] = rand::random();
        let mut lines = format!("{TEST_KID} hs256 {}\n", encode(&people_secret));
        let mut services = Vec::new();
        for role in Role::ALL.into_iter().filter(|r| r.is_service()) {
            let secret: [u8; 32] = rand::random();
            let kid = format!("{TEST_KID}-{}", role.as_str().replace(':', "-"));
            lines.push_str(&format!("{kid} hs256 {} roles={role}\n", encode(&secret)));
            services.push((role, Signer::hs256(kid, &secret)));
        }
        std::fs::write(&path, lines).expect("temp dir is writable");
        TestKeys {
            path,
            people: Signer::hs256(TEST_KID, &people_secret),
            services,
        }
    })
}

/// The path of this test process's keys file.
pub fn test_keys_file() -> PathBuf {
    test_keys().path.clone()
}

/// A token for `subject` with `roles`, valid for an hour, under the test keys: a
/// service's role is signed with that service's key, people's roles with the people key.
pub fn token(subject: &str, roles: &[Role]) -> String {
    let keys = test_keys();
    let signer = roles
        .iter()
        .find_map(|role| keys.services.iter().find(|(r, _)| r == role))
        .map_or(&keys.people, |(_, signer)| signer);
    signer.mint(subject, roles, 3_600)
}

/// The signer of the service `role`'s key, to show what it may not sign.
pub fn service_signer(role: Role) -> &'static Signer {
    test_keys()
        .services
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, signer)| signer)
        .expect("a test key for every service role")
}

/// A token signer under the test keys' people key, for tokens with unusual claims
/// (expired, ...).
pub fn signer() -> &'static Signer {
    &test_keys().people
}

/// Attaches `authorization: Bearer <token>` to every call of a client:
/// `FooClient::with_interceptor(channel, Bearer::new(&token))`.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().ok())
    }

    /// No credentials at all.
    pub fn none() -> Self {
        Bearer(None)
    }

    /// An admin's token.
    pub fn admin() -> Self {
        Bearer::new(&token("test-admin", &[Role::Admin]))
    }

    /// A token for `subject` in `role`.
    pub fn role(subject: &str, role: Role) -> Self {
        Bearer::new(&token(subject, &[role]))
    }

    /// Viewer `user`'s token.
    pub fn viewer(user: &str) -> Self {
        Bearer::role(user, Role::Viewer)
    }

    /// Creator `id`'s token.
    pub fn creator(id: &str) -> Self {
        Bearer::role(id, Role::Creator)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A service running in this process on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), StartError>>,
}

impl Running {
    /// Starts `run(listener, shutdown)` on an ephemeral loopback port and waits until the
    /// service answers its health check with SERVING (or fails to start).
    pub async fn start<F, Fut>(run: F) -> Result<Running, StartError>
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), StartError>> + Send + 'static,
    {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), run).await
    }

    /// Like [`Running::start`], on a given address (to bring a service back where its
    /// peers expect it).
    pub async fn start_on<F, Fut>(address: SocketAddr, run: F) -> Result<Running, StartError>
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), StartError>> + Send + 'static,
    {
        let listener = ovation_server::bind(address).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: addr0(),
            source,
        })?;
        let shutdown = Shutdown::new();
        let mut task = tokio::spawn(run(listener, shutdown.clone()));
        let running_check = async {
            loop {
                if serving(addr).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = running_check => Ok(Running { addr, shutdown, task }),
            ended = &mut task => match ended {
                Ok(Ok(())) => panic!("service stopped before it served"),
                Ok(Err(e)) => Err(e),
                Err(join) => panic!("service task failed: {join}"),
            },
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to the service.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("loopback endpoint is a valid URI")
            .connect()
            .await
            .expect("service accepts connections")
    }

    /// Trips shutdown and waits for the service to drain and stop.
    pub async fn stop(self) -> Result<(), StartError> {
        self.shutdown.trigger();
        match self.task.await {
            Ok(result) => result,
            Err(join) => panic!("service task failed: {join}"),
        }
    }
}

fn addr0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// True when the server at `addr` answers grpc.health.v1 with SERVING.
pub async fn serving(addr: SocketAddr) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let Ok(channel) = Channel::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().status == 1)
}

#[cfg(test)]
mod tests {
    use super::postgres_server_url;

    #[test]
    fn postgres_tests_skip_locally_but_never_under_ci() {
        let url = || Some("postgres://h/db".to_owned());
        assert_eq!(postgres_server_url(None, url()), Ok(url()));
        assert_eq!(postgres_server_url(Some("true"), url()), Ok(url()));
        assert_eq!(postgres_server_url(None, None), Ok(None));
        assert_eq!(postgres_server_url(Some("false"), None), Ok(None));
        assert_eq!(
            postgres_server_url(Some("0"), Some(String::new())),
            Ok(None)
        );
        let refused = postgres_server_url(Some("true"), None).unwrap_err();
        assert!(refused.contains("OVATION_TEST_POSTGRES_URL"), "{refused}");
        assert!(postgres_server_url(Some("1"), Some(String::new())).is_err());
    }
}
