//! What every Ovation service runs on, so no service copies plumbing.
//!
//! - [`access`]: who may call: authentication of every call and per-caller rate limits
//!   (a tower layer over `ovation-auth`'s token verification), and the per-RPC
//!   authorization checks (`access::require`).
//! - [`config`]: the settings every service shares (`OVATION_*` variables and flags).
//! - [`crash_point`]: `OVATION_CRASH_POINT`, an exact moment at which fault tests make a
//!   process abort.
//! - [`serve`]: the gRPC server: grpc.health.v1 following database reachability, server
//!   reflection v1 and v1alpha, per-request timeout, a concurrency limit with load shedding,
//!   a span per RPC with W3C trace context, RPC metrics and `/metrics` (when
//!   `--metrics-addr` is set), graceful shutdown; and [`prepare_database`], migrations as
//!   the settings say (at start, as a Job with `--migrate-only`, or required).
//! - [`peer`]: calls to other services: lazy channels, identity tokens, trace context
//!   and a deadline on every call.
//! - [`sandbox`]: `OVATION_ALLOW_SANDBOX`, without which a sandbox provider refuses to
//!   start.
//! - [`shutdown`]: SIGTERM/SIGINT turned into one cancellation every task watches.
//! - [`error`]: [`ApiError`], the one error type that becomes a `tonic::Status` with rich
//!   details (`ErrorInfo`, `BadRequest`).
//! - [`tls`]: TLS and mTLS for servers (rustls) and for the channels services open to
//!   each other.
//! - [`gauges`]: gauges read from the database on a timer (`--db-gauges-interval-ms`).
//! - [`edge`]: proto ↔ domain conversions shared by services (timestamps, money, pages).
//! - [`idempotency`]: [`IdempotentCall`], an idempotent RPC's key scope and fingerprint
//!   named once, run through the shared key store.
//! - [`lifecycle`]: a service process from `main` to stop ([`service_main`],
//!   [`ServiceStart`]), the same for every service.
//!
//! Limits: every request is bounded in time (`request_timeout_ms`), in size
//! (`request_bytes_max`) and in concurrency (`concurrency_max`, then RESOURCE_EXHAUSTED).

pub mod access;
pub mod config;
pub mod crash_point;
pub mod edge;
pub mod error;
pub mod gauges;
pub mod idempotency;
pub mod lifecycle;
pub mod peer;
pub mod sandbox;
pub mod serve;
pub mod shutdown;
pub mod tls;

pub use config::ServerConfig;
pub use error::ApiError;
pub use idempotency::IdempotentCall;
pub use lifecycle::{ServiceStart, service_main};
pub use serve::{Next, ServiceSpec, StartError, bind, prepare_database, serve};
pub use shutdown::Shutdown;
