//! The catalog's tests, one binary: the service over real gRPC on SQLite and (when
//! `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL, and its rows of the authorization matrix.
//! `tests/secrets.rs` is a binary of its own: it installs the process-wide log subscriber.

mod authorization;
mod catalog;
