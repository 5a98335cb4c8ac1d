//! The end-to-end tests, one binary: the services as separate processes under faults and
//! outages, one trace across four services, `/metrics` of `ovation up`, the catalog binary,
//! `ovation bench` and its audit, the README walkthrough with the real grpcurl, every RPC
//! refusing bad credentials, and the Kubernetes manifests' rules.

mod bench;
mod catalog_process;
mod faults;
mod gifts;
mod k8s_manifests;
mod metrics;
mod money_risk;
mod payout_replicas;
mod readme;
mod saga_outages;
mod traces;
mod unauthenticated;
mod wallet_process;
