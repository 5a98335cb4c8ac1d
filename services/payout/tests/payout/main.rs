//! The payout service's tests, one binary: over real gRPC beside a real catalog, on SQLite
//! and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL: creators and their accounts,
//! credits and payouts, the authorization matrix, and suspension racing the payout worker.

mod accounts;
mod authorization;
mod batch;
mod clawback;
mod controls;
mod maturity;
mod migrations;
mod payout;
mod stripe;
mod suite;
mod suspension;
