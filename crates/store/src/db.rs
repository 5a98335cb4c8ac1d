//! One pool over PostgreSQL or SQLite, chosen by the URL's scheme.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor, Transaction};

use crate::StoreError;

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Pool sizing and patience. Every wait has a bound.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Most connections the pool opens.
    pub connections_max: u32,
    /// Longest a query waits for a free connection before failing UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Longest start-up keeps retrying an unreachable database before giving up.
    pub connect_timeout_ms: u64,
    /// How long SQLite waits on a lock before SQLITE_BUSY.
    pub sqlite_busy_timeout_ms: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            connections_max: 16,
            acquire_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            sqlite_busy_timeout_ms: 10_000,
        }
    }
}

/// A service's database: a pool plus the knowledge of which engine is behind it.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: this process's writers take turns here before `BEGIN IMMEDIATE`.
    /// SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    /// the busy handler (1, 2, 5, 10… ms) instead of being handed the lock when it frees,
    /// which under load leaves the lock idle between writers and stretches the tail.
    /// Queued here, the next writer starts the moment the previous one ends. Taken before a
    /// connection is acquired, so a waiting writer holds no connection.
    write_turns: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Whether idempotency keys from before they were scoped (scope '') may still be
    /// stored: until the pruner has seen none, a fresh key is also looked up there, so a
    /// retry that straddles the upgrade still replays (`idempotency.rs`).
    pub(crate) unscoped_keys_possible: Arc<std::sync::atomic::AtomicBool>,
}

/// A write transaction from [`Db::begin_write`]: the transaction (use it as a connection),
/// and on SQLite this process's write turn, given back when it ends.
#[derive(Debug)]
pub struct WriteTx {
    // Declared first, so it is dropped (rolled back) before the turn is given back.
    tx: Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The migrations every service's database carries (the idempotency keys table).
/// Versions below 100 are reserved for these; services number theirs from 100.
static SHARED_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
/// Attempts at migrating a SQLite database that another process migrates at the same time.
const MIGRATE_ATTEMPTS_MAX: u32 = 5;
/// First migration version a service may use.
pub const SERVICE_MIGRATION_VERSION_MIN: i64 = 100;

/// Migrations whose released text was later revised in its comments only, with the SHA-384
/// checksum it was applied under. sqlx refuses a database whose recorded checksum differs
/// from the file's, so [`Db::migrate`] moves a recorded old checksum to the current one:
/// the SQL is the same, nothing else changes. Only comment edits belong here (the test
/// `comment_revisions_change_comments_only` rebuilds the old text to prove it).
const COMMENT_REVISIONS: &[CommentRevision] = &[CommentRevision {
    version: 1,
    // Its first line cited a section of a document outside the repository.
    #[cfg(test)]
    old_first_line: "-- Shared by every service (SPEC §4): one row per idempotency key, holding the fingerprint",
    old_checksum_hex: "5e629512400d0b0a4569829369af962a845335fdae124e7dca53caaaab07bdbbcff9c7c99a5fb5c02a8d9a9918c869b6",
}];

struct CommentRevision {
    version: i64,
    /// The revision changed only the first line; this was it (kept for the test that
    /// proves the revision comment-only).
    #[cfg(test)]
    old_first_line: &'static str,
    old_checksum_hex: &'static str,
}

impl Db {
    /// Opens a pool for `url` (`postgres://…` or `sqlite://…`), retrying an unreachable
    /// database for up to `connect_timeout_ms`, then failing with a message that names the
    /// database (password redacted) and the cause.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let busy_timeout_ms = options.sqlite_busy_timeout_ms;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(options.connections_max)
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms));
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; the busy timeout makes
                    // writers queue. synchronous=FULL syncs the WAL at every commit: with
                    // NORMAL a power loss can drop the last commits of one service's file
                    // and not of another's (coins debited in wallet, the saga's record of
                    // it gone in gifting), which breaks I3 across services.
                    let pragmas = format!(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {busy_timeout_ms}; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"
                    );
                    conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    Ok(())
                })
            });
        }

        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(options.connect_timeout_ms);
        let mut backoff = Duration::from_millis(100);
        loop {
            // The first connection is opened directly, so an unreachable database fails
            // with its real cause (connection refused, unknown host) within the deadline
            // instead of the pool's generic acquire timeout.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = match tokio::time::timeout(left, AnyConnection::connect(&url)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    pool_options.clone().connect(&url).await
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
            match attempt {
                Ok(pool) => {
                    let write_turns =
                        (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
                    return Ok(Db {
                        pool,
                        backend,
                        write_turns,
                        unscoped_keys_possible: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                    });
                }
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(database = %redact(&url), error = %e, "database not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(StoreError::Config(format!(
                        "cannot reach the database at {} within {} ms: {e}",
                        redact(&url),
                        options.connect_timeout_ms
                    )));
                }
            }
        }
    }

    /// Applies the shared migrations and then the service's own, in version order.
    /// Refuses a service migration numbered below [`SERVICE_MIGRATION_VERSION_MIN`].
    pub async fn migrate(&self, service: &Migrator) -> Result<(), StoreError> {
        if let Some(m) = service
            .iter()
            .find(|m| m.version < SERVICE_MIGRATION_VERSION_MIN)
        {
            return Err(StoreError::Config(format!(
                "service migration {} ({}) is numbered below {SERVICE_MIGRATION_VERSION_MIN}, \
                 which is reserved for shared migrations",
                m.version, m.description
            )));
        }
        let all: Vec<_> = SHARED_MIGRATIONS
            .iter()
            .chain(service.iter())
            .cloned()
            .collect();
        let migrator = Migrator::with_migrations(all);
        self.adopt_comment_revisions(&migrator).await?;
        // sqlx locks migrations on PostgreSQL (advisory lock) but not on SQLite, where two
        // replicas starting together on one fresh file race: the loser fails with "already
        // exists". Each migration is one transaction, so a retry sees the winner's work as
        // applied and goes on. Bounded: a real migration error still surfaces.
        let mut attempt = 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if self.backend == Backend::Sqlite && attempt < MIGRATE_ATTEMPTS_MAX => {
                    tracing::info!(attempt, error = %e, "migrations raced another process; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Moves the recorded checksum of each [`COMMENT_REVISIONS`] migration applied under its
    /// old text to the current text's. Concurrent starts are harmless: the update is
    /// conditional on the old checksum.
    async fn adopt_comment_revisions(&self, migrator: &Migrator) -> Result<(), StoreError> {
        for revision in COMMENT_REVISIONS {
            let Some(current) = migrator.iter().find(|m| m.version == revision.version) else {
                continue;
            };
            let old = hex_bytes(revision.old_checksum_hex);
            let adopted = sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
            )
            .bind(current.checksum.to_vec())
            .bind(revision.version)
            .bind(old)
            .execute(&self.pool)
            .await;
            match adopted {
                Ok(_) => {}
                // No migrations table: nothing is applied yet.
                Err(sqlx::Error::Database(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Versions of the shared and the service's migrations not yet applied to this database.
    pub async fn pending_migrations(&self, service: &Migrator) -> Result<Vec<i64>, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => rows
                    .iter()
                    .map(|r| sqlx::Row::try_get::<i64, _>(r, 0))
                    .collect::<Result<_, _>>()?,
                // No migrations table: nothing is applied yet.
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        Ok(SHARED_MIGRATIONS
            .iter()
            .chain(service.iter())
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection for reads (writes go through [`Db::begin_write`]); waiting for
    /// one is bounded by the pool's acquire timeout (UNAVAILABLE after it).
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write. On SQLite it first waits for this process's
    /// write turn, then takes the write lock at once (`BEGIN IMMEDIATE`), so two writers
    /// queue instead of one failing with SQLITE_BUSY when it upgrades from reader to writer
    /// (other processes on the same file still queue on the busy timeout).
    ///
    /// Do not begin a second write transaction while holding one: on SQLite that waits for
    /// the first forever.
    /// This process's turn to write (SQLite; `None` on PostgreSQL, which locks rows): for
    /// a write of one statement outside [`Db::begin_write`], which takes the turn itself.
    /// Take it before acquiring a connection, and never while holding a turn or a
    /// [`WriteTx`]: it is not reentrant.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_turns {
            Some(turns) => Some(turns.clone().lock_owned().await),
            None => None,
        }
    }

    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// True when the database answers `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let probe = async {
            let mut conn = self.pool.acquire().await?;
            conn.ping().await?;
            Ok::<_, sqlx::Error>(())
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A connection inside a transaction, as the service repositories take it.
pub type Conn = AnyConnection;

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL {}: use postgres://… or sqlite://path",
            redact(url)
        )))
    }
}

/// Creates the SQLite file's directory and asks sqlx to create the file if missing.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Config(
            "an in-memory SQLite database is not supported: each pooled connection would see \
             its own empty database; give a file path"
                .into(),
        ));
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create the directory {} for the SQLite database: {e}",
                dir.display()
            ))
        })?;
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_owned(),
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// The URL of database `name` on the PostgreSQL server of `server_url`:
/// `postgres://user@host:port/anything?query` → `postgres://user@host:port/name?query`.
pub fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Bytes of a lowercase hex string (constants only).
fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Each revision's old text is the current text with its old first line, and hashes to
    /// the recorded old checksum: the revision touched a comment and nothing else.
    #[test]
    fn comment_revisions_change_comments_only() {
        use sha2::{Digest, Sha384};
        for revision in COMMENT_REVISIONS {
            let current = SHARED_MIGRATIONS
                .iter()
                .find(|m| m.version == revision.version)
                .expect("the revised migration exists");
            let (first, rest) = current
                .sql
                .as_str()
                .split_once('\n')
                .expect("more than one line");
            assert!(first.starts_with("--") && revision.old_first_line.starts_with("--"));
            let old_text = format!("{}\n{rest}", revision.old_first_line);
            assert_eq!(
                hex_of(&Sha384::digest(old_text.as_bytes())),
                revision.old_checksum_hex
            );
            assert_eq!(
                hex_of(&current.checksum),
                hex_of(&Sha384::digest(current.sql.as_str().as_bytes()))
            );
        }
    }

    /// A database migrated under the old text migrates again under the new one, on both
    /// engines (without the adoption sqlx fails: "previously applied but has been modified").
    #[tokio::test]
    async fn databases_migrated_under_the_old_comments_still_migrate() {
        let mut databases = vec![ovation_testkit::TestDatabase::sqlite()];
        databases.extend(ovation_testkit::TestDatabase::postgres().await);
        let none = Migrator::with_migrations(Vec::new());
        for database in databases {
            let db = Db::connect(database.url(), &DbOptions::default())
                .await
                .unwrap();
            db.migrate(&none).await.unwrap();
            let old = hex_bytes(COMMENT_REVISIONS[0].old_checksum_hex);
            sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
                .bind(old)
                .execute(db.pool())
                .await
                .unwrap();
            db.migrate(&none)
                .await
                .expect("the old checksum is adopted");
            db.migrate(&none)
                .await
                .expect("and again: nothing to adopt");
            db.pool().close().await;
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/wallet"),
            "postgres://app:***@db:5432/wallet"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn database_urls_swap_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }

    #[tokio::test]
    async fn sqlite_connections_sync_every_commit() {
        use sqlx::Row;
        let dir = std::env::temp_dir().join(format!("ovation-db-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sync.db", dir.display());
        let db = Db::connect(&url, &DbOptions::default()).await.unwrap();
        // Every connection of the pool, not just the first.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = db.conn().await.unwrap();
            let row = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(row.try_get::<i64, _>(0).unwrap(), 2, "synchronous = FULL");
            held.push(conn);
        }
        drop(held);
        db.pool().close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(backend_of("postgres://x/y").unwrap(), Backend::Postgres);
        assert_eq!(backend_of("sqlite://data/x.db").unwrap(), Backend::Sqlite);
        assert!(backend_of("mysql://x").is_err());
    }
}
