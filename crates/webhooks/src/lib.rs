//! Provider webhooks, shared by the services that receive them (wallet, payout).
//!
//! - [`serve`]: an HTTP/1.1 listener for provider callbacks: POST only, a body limit
//!   ([`BODY_BYTES_MAX`]), a per-request timeout ([`REQUEST_TIMEOUT_MS`]), graceful
//!   shutdown with the service's [`ovation_server::Shutdown`]. The service brings the
//!   routes; a handler stays thin: verify the signature → parse → one operation → answer.
//! - [`stripe_signature`]: the `Stripe-Signature` scheme (HMAC-SHA256 over
//!   `"{t}.{raw body}"`, several `v1` entries, a timestamp tolerance, several secrets
//!   for rotation), and [`stripe_signature::sign`] for tests and in-test provider servers.
//! - [`stripe_event`]: the envelope every Stripe event shares (`id`, `type`,
//!   `data.object`).
//! - [`app_store_jws`]: Apple's signed App Store data (StoreKit 2 transactions, App Store
//!   Server Notifications v2): the `x5c` chain to a configured Apple root, Apple's marker
//!   extensions, the ES256 signature; `testing` (feature) signs with a test chain.
//!
//! Exactly-once application of an event (a table of received event ids written in the
//! same transaction as the effect) is the service's, in its own store.

pub mod app_store_jws;
pub mod server;
pub mod stripe_event;
pub mod stripe_signature;

pub use server::{BODY_BYTES_MAX, Limits, REQUEST_TIMEOUT_MS, serve, serve_with_limits};
