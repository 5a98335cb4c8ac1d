use thiserror::Error;

/// What can go wrong in the store, sorted by what the caller should do about it.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy right now: retry later (UNAVAILABLE).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The idempotency key was first used with other parameters (ALREADY_EXISTS).
    #[error("idempotency key was already used with different parameters")]
    KeyReused,
    /// The idempotency key belongs to a request that has not finished (ABORTED: retry).
    #[error("a request with this idempotency key is still in progress")]
    KeyInProgress,
    /// A stored replay could not be decoded: a bug or a corrupted row (INTERNAL).
    #[error("stored response for this idempotency key cannot be decoded")]
    CorruptReplay,
    /// The database URL or options are wrong (a start-up error).
    #[error("{0}")]
    Config(String),
    /// Applying the migrations failed (a start-up error).
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error (INTERNAL): a constraint the code should have prevented.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// True for a UNIQUE/PRIMARY KEY violation, which callers map to ALREADY_EXISTS.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// True for a CHECK constraint violation (a bound the edge should have caught).
    pub fn is_check_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_check_violation(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED (after the busy timeout ran out).
            Some("5") | Some("6") | Some("517") | Some("261") => true,
            // PostgreSQL: serialization failure, deadlock, too many connections,
            // admin shutdown, cannot connect now.
            Some("40001") | Some("40P01") | Some("53300") | Some("57P01") | Some("57P03") => true,
            _ => false,
        },
        _ => false,
    }
}
