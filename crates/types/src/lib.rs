//! Ovation's domain value types, and the limits they enforce (docs/limits.md).
//!
//! Every value that enters a service from the outside is parsed into one of these
//! newtypes at the gRPC edge (`T::parse`), so domain code only ever sees values that are
//! within bounds. Parsing never panics; a failure is a [`Violation`] naming the rule broken,
//! and [`Violations`] collects them so one bad request reports every bad field at once.
//!
//! Layout:
//! - [`limits`]: every bound, in one place, with units in the names.
//! - [`text`]: ids, names, free text, idempotency keys.
//! - [`amount`]: coins, diamonds, basis points, quantities, money.
//! - [`page`]: page sizes and opaque page tokens.
//! - [`time`]: instants as Unix milliseconds.
//!
//! Architecture invariant: this crate depends on nothing (no tonic, no sqlx), so domain
//! code can use it without pulling in a network or a database.

pub mod amount;
pub mod limits;
pub mod page;
pub mod text;
pub mod time;
mod violation;

pub use amount::{Bps, Coins, CurrencyCode, Diamonds, Money, Quantity};
pub use page::{PageSize, PageToken};
pub use text::{IdempotencyKey, Name, ResourceId, Text, reason_noting_reported_actor};
pub use time::{Clock, TimeWindow, UnixMillis};
pub use violation::{Parsed, Violation, Violations};
