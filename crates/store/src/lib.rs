//! Ovation's database plumbing, shared by every service.
//!
//! - [`db`]: [`Db`], one sqlx pool over PostgreSQL or SQLite chosen by URL; SQLite in WAL
//!   mode with a busy timeout; write transactions that take the write lock up front
//!   (`BEGIN IMMEDIATE`) so concurrent writers queue instead of failing; migrations.
//! - [`batch`]: placeholder lists and the row lock for multi-row statements (batches).
//! - [`idempotency`]: the idempotency-key store (docs/economy.md, "Idempotency keys").
//! - [`error`]: [`StoreError`], which separates transient faults (UNAVAILABLE, retry) from
//!   everything else.
//!
//! Architecture invariant: SQL text here and in the services is portable: the same
//! statement runs on both databases (`$n` parameters, `ON CONFLICT`, `RETURNING`, BIGINT
//! amounts, BIGINT Unix-millisecond instants). There is no per-database SQL branch outside
//! [`db`] and [`batch::row_lock`].

pub mod batch;
pub mod db;
pub mod error;
pub mod idempotency;

pub use db::{Backend, Db, DbOptions, WriteTx};
pub use error::StoreError;
pub use idempotency::{Fingerprint, KeyScope, Replayed};

/// Re-exported so services name one sqlx.
pub use sqlx;
