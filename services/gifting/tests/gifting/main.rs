//! Gifting's tests, one binary: the gift saga over real gRPC beside catalog, wallet and
//! payout, gift reversals, the velocity limit, the authorization matrix, and the saga
//! store's fenced writes.

mod authorization;
mod gifting;
mod reversals;
mod saga_store;
mod suite;
mod velocity;
