//! Idempotency keys (SPEC §4): the same key with the same parameters returns the stored
//! result; with other parameters it fails; a concurrent duplicate is not executed twice.
//!
//! How: the key is claimed with `INSERT … ON CONFLICT DO NOTHING` inside the same write
//! transaction that performs the operation and stores its encoded response. A concurrent
//! duplicate blocks on the key's row (PostgreSQL) or on the write lock (SQLite) until the
//! first commits, then finds the stored response. If the first rolls back, the key was
//! never claimed and the duplicate runs as if it were first. Failed operations store
//! nothing, so a retry after an error runs again.

use futures::future::BoxFuture;
use ovation_types::{IdempotencyKey, UnixMillis};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::Conn;
use crate::{Db, StoreError};

/// What a request is, for comparing a retry with the original: SHA-256 over the operation
/// name and the encoded request (prost encodes deterministically; requests carry no maps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(operation: &str, request: &impl prost::Message) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(operation.as_bytes());
        hasher.update([0u8]);
        hasher.update(request.encode_to_vec());
        let digest = hasher.finalize();
        Fingerprint(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex digest, for operations that keep their own record of it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a response was just produced or replayed from an earlier request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    No,
    Yes,
}

/// Outcome of claiming a key.
enum Claim {
    Fresh,
    Replay(Vec<u8>),
}

impl Db {
    /// Runs `operation` at most once per idempotency key, in one write transaction with
    /// the key's claim and its stored response.
    pub async fn idempotent<T, E, F>(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        operation: F,
    ) -> Result<(T, Replayed), E>
    where
        T: prost::Message + Default,
        E: From<StoreError>,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>>,
    {
        let mut tx = self.begin_write().await?;
        match claim(&mut tx, key, fingerprint, UnixMillis::now()).await? {
            Claim::Replay(bytes) => {
                tx.rollback().await.map_err(StoreError::from)?;
                let response =
                    T::decode(bytes.as_slice()).map_err(|_| StoreError::CorruptReplay)?;
                return Ok((response, Replayed::Yes));
            }
            Claim::Fresh => {}
        }
        let response = operation(&mut tx).await?;
        record(&mut tx, key, &response.encode_to_vec()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((response, Replayed::No))
    }

    /// Deletes keys created before `before`; returns how many. Keys must be kept at
    /// least 24 h (SPEC §4): the caller chooses `before` accordingly.
    pub async fn prune_idempotency_keys(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < $1")
            .bind(before.0)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

async fn claim(
    conn: &mut Conn,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    now: UnixMillis,
) -> Result<Claim, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, fingerprint, response, created_at_ms) \
         VALUES ($1, $2, NULL, $3) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key.as_str())
    .bind(fingerprint.0.as_str())
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query(
        "SELECT fingerprint, response FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let stored: String = row.try_get("fingerprint")?;
    if stored != fingerprint.0 {
        return Err(StoreError::KeyReused);
    }
    let response: Option<Vec<u8>> = row.try_get("response")?;
    match response {
        Some(bytes) => Ok(Claim::Replay(bytes)),
        None => Err(StoreError::KeyInProgress),
    }
}

async fn record(conn: &mut Conn, key: &IdempotencyKey, response: &[u8]) -> Result<(), StoreError> {
    sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE idempotency_key = $2")
        .bind(response)
        .bind(key.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
