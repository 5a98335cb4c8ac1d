//! Idempotency keys (docs/economy.md): the same key with the same parameters returns the stored
//! result; with other parameters it fails; a concurrent duplicate is not executed twice.
//!
//! A key belongs to a [`KeyScope`]: the caller that sent it and the RPC it was sent to, as
//! Stripe scopes keys per account. Two users choosing `buy-1` never collide; service
//! identities are scopes of their own.
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
use std::sync::atomic::Ordering;

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

/// Whose key it is: a principal (`user:alice`, `service:gifting`; see
/// `ovation_auth::Caller::principal`) and the RPC the key was sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyScope(String);

impl KeyScope {
    pub fn new(principal: &str, rpc: &str) -> Self {
        KeyScope(format!("{principal} {rpc}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The scope of keys stored before keys were scoped.
const UNSCOPED: &str = "";

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
        scope: &KeyScope,
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
        let unscoped_possible = self.unscoped_keys_possible.load(Ordering::Relaxed);
        match claim(
            &mut tx,
            scope,
            key,
            fingerprint,
            unscoped_possible,
            UnixMillis::now(),
        )
        .await?
        {
            Claim::Replay(bytes) => {
                tx.rollback().await.map_err(StoreError::from)?;
                let response =
                    T::decode(bytes.as_slice()).map_err(|_| StoreError::CorruptReplay)?;
                return Ok((response, Replayed::Yes));
            }
            Claim::Fresh => {}
        }
        let response = operation(&mut tx).await?;
        record(&mut tx, scope, key, &response.encode_to_vec()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((response, Replayed::No))
    }

    /// Deletes keys created before `before`; returns how many. Keys must be kept at
    /// least 24 h (docs/economy.md): the caller chooses `before` accordingly.
    pub async fn prune_idempotency_keys(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < $1")
            .bind(before.0)
            .execute(self.pool())
            .await?;
        if self.unscoped_keys_possible.load(Ordering::Relaxed) {
            let left = sqlx::query("SELECT COUNT(*) FROM idempotency_keys WHERE scope = $1")
                .bind(UNSCOPED)
                .fetch_one(self.pool())
                .await?
                .try_get::<i64, _>(0)?;
            if left == 0 {
                self.unscoped_keys_possible.store(false, Ordering::Relaxed);
            }
        }
        Ok(done.rows_affected())
    }
}

async fn claim(
    conn: &mut Conn,
    scope: &KeyScope,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    unscoped_possible: bool,
    now: UnixMillis,
) -> Result<Claim, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, response, \
         created_at_ms) VALUES ($1, $2, $3, NULL, $4) \
         ON CONFLICT (scope, idempotency_key) DO NOTHING",
    )
    .bind(scope.as_str())
    .bind(key.as_str())
    .bind(fingerprint.0.as_str())
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        // A key stored before keys were scoped answers a retry of the very same request
        // (same fingerprint) and nothing else: another caller's key is not ours.
        if unscoped_possible
            && let Some((stored, Some(bytes))) = stored(conn, UNSCOPED, key).await?
            && stored == fingerprint.0
        {
            return Ok(Claim::Replay(bytes));
        }
        return Ok(Claim::Fresh);
    }
    let (stored, response) = stored(conn, scope.as_str(), key)
        .await?
        .ok_or(StoreError::KeyInProgress)?;
    if stored != fingerprint.0 {
        return Err(StoreError::KeyReused);
    }
    match response {
        Some(bytes) => Ok(Claim::Replay(bytes)),
        None => Err(StoreError::KeyInProgress),
    }
}

/// The fingerprint and response stored under a key.
async fn stored(
    conn: &mut Conn,
    scope: &str,
    key: &IdempotencyKey,
) -> Result<Option<(String, Option<Vec<u8>>)>, StoreError> {
    let row = sqlx::query(
        "SELECT fingerprint, response FROM idempotency_keys \
         WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(scope)
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| Ok((row.try_get("fingerprint")?, row.try_get("response")?)))
        .transpose()
}

async fn record(
    conn: &mut Conn,
    scope: &KeyScope,
    key: &IdempotencyKey,
    response: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response = $1 WHERE scope = $2 AND idempotency_key = $3",
    )
    .bind(response)
    .bind(scope.as_str())
    .bind(key.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
