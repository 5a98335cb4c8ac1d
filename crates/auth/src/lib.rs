//! Who is calling, and what they may be: bearer-token verification and roles.
//!
//! Callers present `authorization: Bearer <JWT>`. The token's signature is checked against
//! a [`KeySet`] (HS256 shared secrets, or EdDSA/RS256 public keys; several keys with `kid`s
//! so keys can rotate), then its claims become a [`Caller`]: a subject (a user or service
//! id) and its [`Role`]s, and — when the issuer checked it — the subject's age
//! ([`VerifiedAge`], from the optional boolean claim `age_verified_adult`: `true` an adult,
//! `false` a minor, absent unverified; the wallet's age rule reads it). What each role may
//! do is decided per RPC by each service; the shared server layer that calls
//! [`KeySet::verify`] is in `ovation-server`.
//!
//! Layout:
//! - [`role`]: [`Role`] and [`Caller`].
//! - [`keys`]: [`KeySet`] (verify) and [`Signer`] (mint, for dev and tests), and the keys
//!   file format.
//! - [`dev`]: the dev keys `ovation up` generates and keeps in its data directory.
//!
//! Architecture invariant: no error or `Debug` output here contains a token or key
//! material, so nothing secret can reach a log, a trace or a caller.

pub mod dev;
pub mod keys;
pub mod role;

pub use keys::{AuthError, KeySet, Signer, TokenPolicy};
pub use role::{Caller, Role, VerifiedAge};
