//! The wallet's tests, one binary: the service over real gRPC beside a real catalog (on
//! SQLite and, when `OVATION_TEST_POSTGRES_URL` is set, PostgreSQL), its races and random
//! concurrent mixes, the ledger's properties and the migrations.

mod actors;
mod age;
mod app_store;
mod authorization;
mod batch;
mod clawbacks;
mod concurrent_mixes;
mod fake_stripe;
mod ledger_properties;
mod migrations;
mod races;
mod stripe;
mod suite;
mod velocity;
mod wallet;
