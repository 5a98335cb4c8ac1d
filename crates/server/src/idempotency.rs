//! One idempotent RPC call, named once: whose key it is (the caller's principal and the
//! RPC) and what the request was (its fingerprint), so a handler cannot scope the key to
//! one RPC and fingerprint it as another. The key store itself is `ovation_store`'s
//! ([`Db::idempotent`]); see docs/economy.md for the rules.

use futures::future::BoxFuture;
use ovation_auth::Caller;
use ovation_store::db::Conn;
use ovation_store::{Db, Fingerprint, KeyScope, Replayed, StoreError};
use ovation_types::IdempotencyKey;

/// A request to run at most once per idempotency key of its caller and RPC.
#[derive(Clone, Debug)]
pub struct IdempotentCall {
    scope: KeyScope,
    fingerprint: Fingerprint,
}

impl IdempotentCall {
    /// `rpc` is the method name as the contract spells it (`CreateGift`); `request` is the
    /// request as received, before parsing, so a retry must repeat it byte for byte.
    pub fn new(caller: &Caller, rpc: &str, request: &impl prost::Message) -> Self {
        IdempotentCall {
            scope: KeyScope::new(&caller.principal(), rpc),
            fingerprint: Fingerprint::of(rpc, request),
        }
    }

    pub fn scope(&self) -> &KeyScope {
        &self.scope
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Runs `operation` once per key, in one write transaction with the key's claim and
    /// its stored response; a retry gets the stored response.
    pub async fn run<T, E, F>(&self, db: &Db, key: &IdempotencyKey, operation: F) -> Result<T, E>
    where
        T: prost::Message + Default,
        E: From<StoreError>,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>>,
    {
        let (response, _) = self.run_telling_replay(db, key, operation).await?;
        Ok(response)
    }

    /// [`run`](Self::run), also saying whether the response was replayed.
    pub async fn run_telling_replay<T, E, F>(
        &self,
        db: &Db,
        key: &IdempotencyKey,
        operation: F,
    ) -> Result<(T, Replayed), E>
    where
        T: prost::Message + Default,
        E: From<StoreError>,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>>,
    {
        db.idempotent(&self.scope, key, &self.fingerprint, operation)
            .await
    }
}
