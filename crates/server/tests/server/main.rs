//! The shared server's tests, one binary: client-side balancing of peer channels, the
//! server's limits, and TLS and mTLS, all over real gRPC on loopback.

mod balancing;
mod limits;
mod tls;
