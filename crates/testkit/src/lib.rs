//! Test kit: what service and end-to-end tests need to run real servers against real
//! databases, and nothing else.
//!
//! - [`TestDatabase`]: a throwaway SQLite file, or a throwaway PostgreSQL database
//!   created on the server named by `OVATION_TEST_POSTGRES_URL` and dropped afterwards.
//!   [`databases`] gives both; without the variable, the PostgreSQL run is skipped and
//!   says so on stderr.
//! - [`Running`]: a service started in-process on an ephemeral loopback port, with a
//!   channel that is ready once the service reports SERVING.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ovation_server::{ServerConfig, Shutdown, StartError};
use sqlx::Executor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

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
    pub async fn postgres() -> Option<TestDatabase> {
        let Ok(server_url) = std::env::var(POSTGRES_URL_VAR) else {
            eprintln!(
                "SKIPPED: PostgreSQL run skipped because {POSTGRES_URL_VAR} is not set \
                 (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres)"
            );
            return None;
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

trait ConnectUrl: Sized {
    async fn connect_with_url(url: &str) -> Result<Self, sqlx::Error>;
}

impl ConnectUrl for sqlx::AnyConnection {
    async fn connect_with_url(url: &str) -> Result<Self, sqlx::Error> {
        use sqlx::Connection;
        sqlx::AnyConnection::connect(url).await
    }
}

/// SQLite always; PostgreSQL too when `OVATION_TEST_POSTGRES_URL` is set.
pub async fn databases() -> Vec<TestDatabase> {
    let mut all = vec![TestDatabase::sqlite()];
    all.extend(TestDatabase::postgres().await);
    all
}

/// Settings for a service under test: loopback, an ephemeral port, `database_url`.
pub fn server_config(database_url: &str) -> ServerConfig {
    ServerConfig {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.to_owned(),
        ..ServerConfig::default()
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
        let listener = ovation_server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
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
