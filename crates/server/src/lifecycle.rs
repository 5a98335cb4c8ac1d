//! A service process from start to stop, the same for the four services: the binary's
//! `main` ([`service_main`]) and its `run` ([`ServiceStart`]: open the database, serve,
//! then stop the service's workers and close the database). `ovation up` calls the
//! services' `run` functions; each service's own binary is `service_main` around one.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use ovation_store::Db;
use ovation_store::sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::serve::{Next, ServiceSpec, StartError, bind, prepare_database, serve};
use crate::{ServerConfig, Shutdown};

/// What a service binary's `main` does: telemetry (disabled, not fatal, when it cannot
/// start), bind `listen_addr`, `run` until SIGTERM/SIGINT, and the process's exit code.
pub async fn service_main<R, F>(spec: ServiceSpec, listen_addr: SocketAddr, run: R) -> ExitCode
where
    R: FnOnce(TcpListener, Shutdown) -> F,
    F: Future<Output = Result<(), StartError>>,
{
    let _telemetry = match ovation_telemetry::init(spec.name) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("telemetry disabled: {e}");
            None
        }
    };
    let started = async {
        let listener = bind(listen_addr).await?;
        run(listener, Shutdown::on_signals()).await
    };
    match started.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(service = spec.name, error = %e, "service stopped with an error");
            eprintln!("ovation-{}: {e}", spec.name);
            ExitCode::FAILURE
        }
    }
}

/// One service starting: what it serves as, its settings, where it listens and the
/// shutdown it obeys. A service's `run` makes one, opens its database through it, starts its
/// workers (watching [`shutdown`](Self::shutdown)) and ends with [`serve`](Self::serve).
pub struct ServiceStart<'a> {
    spec: ServiceSpec,
    config: &'a ServerConfig,
    listener: TcpListener,
    shutdown: Shutdown,
}

impl<'a> ServiceStart<'a> {
    pub fn new(
        spec: ServiceSpec,
        config: &'a ServerConfig,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> Self {
        ServiceStart {
            spec,
            config,
            listener,
            shutdown,
        }
    }

    /// The shutdown the service's workers watch.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Connects to the service's database and applies its migrations as the settings say
    /// ([`prepare_database`]), then runs `after_migrations` (the catalog seeds there, so a
    /// migration job seeds too). `None`: `--migrate-only` did its work and the database is
    /// closed; the service exits.
    pub async fn open_database<A>(
        &self,
        migrations: &Migrator,
        after_migrations: A,
    ) -> Result<Option<Db>, StartError>
    where
        A: AsyncFnOnce(&Db) -> Result<(), StartError>,
    {
        let config = self.config;
        let db = Db::connect(&config.database_url, &config.args.db_options()).await?;
        let next = prepare_database(&db, migrations, &config.args).await?;
        after_migrations(&db).await?;
        if next == Next::Exit {
            db.close().await;
            return Ok(None);
        }
        Ok(Some(db))
    }

    /// Serves `routes` until the shutdown trips (or the server fails), then stops the
    /// service's background `workers` (they watch the shutdown), waits for them and closes
    /// the database.
    pub async fn serve(
        self,
        routes: Routes,
        db: Db,
        workers: Vec<JoinHandle<()>>,
    ) -> Result<(), StartError> {
        let ServiceStart {
            spec,
            config,
            listener,
            shutdown,
        } = self;
        let result = serve(spec, routes, db.clone(), config, listener, shutdown.clone()).await;
        if !workers.is_empty() {
            // A server that failed must not leave its workers running.
            shutdown.trigger();
            for worker in workers {
                if let Err(e) = worker.await {
                    tracing::error!(service = spec.name, error = %e, "worker task failed");
                }
            }
        }
        db.close().await;
        Ok(result?)
    }
}
