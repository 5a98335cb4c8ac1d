//! Ovation's Prometheus metrics.
//!
//! - [`names`]: every metric name, in one place, as it appears on `/metrics` (units in the
//!   names: `_seconds`, `_total` for counters).
//! - [`global`]: the one registry of the process and its metric families. It is
//!   process-wide on purpose: `ovation up` runs the four services in one process, and their
//!   RPC metrics are told apart by the `service` label (the gRPC service), not by registry.
//! - [`RpcMetricsLayer`]: a tower layer for tonic servers that counts RPCs by service,
//!   method and gRPC code and times them.
//! - [`serve`]: the HTTP endpoint `GET /metrics` (OpenMetrics text format).
//!
//! Every RPC is counted and timed exactly once, from the call to its end. A response
//! whose head carries `grpc-status` (tonic's trailers-only errors: refusals, validation
//! errors, UNIMPLEMENTED) is recorded when the head is ready; otherwise the body is wrapped
//! ([`RpcMetricsBody`]) and the call is recorded when it ends, with the trailers'
//! `grpc-status` — so a server stream that fails after it started gets its real code and
//! its whole lifetime. A body that fails counts `INTERNAL`; one that ends without a status
//! gets the code a gRPC client would infer (`UNKNOWN` for HTTP 200); a call dropped before
//! its end (client gone, deadline) counts `CANCELLED`.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod layer;
mod server;

pub use layer::{
    RpcMetricsBody, RpcMetricsFuture, RpcMetricsLayer, RpcMetricsService, grpc_code_name,
};
pub use server::{CONTENT_TYPE, serve};

/// Every metric name, exactly as exposed on `/metrics`.
pub mod names {
    /// Counter `{service, method, code}`: RPCs handled, by gRPC service
    /// (`ovation.gifting.v1.GiftingService`), method (`SendGift`) and gRPC code (`OK`,
    /// `NOT_FOUND`, …). Unknown services and methods are counted as `unknown`.
    pub const RPC_REQUESTS_TOTAL: &str = "ovation_rpc_requests_total";
    /// Histogram `{service, method}`: time from the call to its end (the trailers, for a
    /// stream its whole lifetime), in seconds.
    pub const RPC_DURATION_SECONDS: &str = "ovation_rpc_duration_seconds";
    /// Counter `{status}`: sagas that reached `completed`, `rejected`, `compensated` or
    /// `needs_operator`, as seen by the replica that drove them there.
    pub const SAGA_OUTCOMES_TOTAL: &str = "ovation_saga_outcomes_total";
    /// Histogram `{step}`: one attempt of one saga step (the call to the peer service), in
    /// seconds: `resolve_gift`, `debit_coins`, `credit_diamonds`, `refund_coins`.
    pub const SAGA_STEP_DURATION_SECONDS: &str = "ovation_saga_step_duration_seconds";
    /// Gauge: sagas in NEEDS_OPERATOR in the gifting database, refreshed by the recovery loop.
    pub const SAGAS_NEEDING_OPERATOR: &str = "ovation_sagas_needing_operator";
    /// Gauge `{service, state}`: database pool connections, `state` = `idle` or `in_use`,
    /// refreshed with the health probe.
    pub const DB_POOL_CONNECTIONS: &str = "ovation_db_pool_connections";
    /// Gauge: PENDING sagas in the gifting database (started, not yet at an outcome).
    pub const SAGAS_IN_FLIGHT: &str = "ovation_sagas_in_flight";
    /// Gauge: age of the oldest PENDING saga, in seconds (0 when none): the saga backlog's
    /// lag. A value that keeps growing means sagas are stuck retrying a step.
    pub const SAGA_OLDEST_IN_FLIGHT_AGE_SECONDS: &str = "ovation_saga_oldest_in_flight_age_seconds";
    /// Gauge: open WatchStreamGifts streams on this replica.
    pub const FEED_WATCHERS: &str = "ovation_feed_watchers";
    /// Histogram: outbox lag, from a gift's completion (its event committed to the outbox)
    /// to its hand-off to a live watcher's stream, in seconds. Events replayed to a watcher
    /// that resumed from an older cursor are not counted: that is catch-up, not lag.
    pub const FEED_DELIVERY_LAG_SECONDS: &str = "ovation_feed_delivery_lag_seconds";
    /// Gauge `{account}`: the coin ledger's balance per account kind (`user` = all users
    /// together, `issuance`, `promotion`, `gift_sink`, `adjustment`), sums of postings. The
    /// kinds sum to 0 while the ledger balances (I1): alert on `sum(...) != 0`.
    pub const LEDGER_COINS: &str = "ovation_ledger_coins";
    /// Gauge `{account}`: the diamond ledger's balance per account kind (`creator`,
    /// `creator_held`, `gift_issuance`, `paid_out`), sums of postings; they sum to 0 (I1).
    pub const LEDGER_DIAMONDS: &str = "ovation_ledger_diamonds";
    /// Gauge: HELD payouts that exhausted their retry budget and await an operator.
    pub const PAYOUTS_NEEDING_ATTENTION: &str = "ovation_payouts_needing_attention";
    /// Gauge `{kind}`: what the payout provider reported that an operator follows up:
    /// `transfer_reversed` (PAID payouts whose transfer came back), `bank_payout_failed`
    /// (creators' failed bank payouts). Both only grow: alert on `increase(...) > 0`.
    pub const PAYOUT_PROVIDER_ALERTS: &str = "ovation_payout_provider_alerts";
    /// Histogram `{hop}`: items per batch the gift saga sent to a peer (`debit`, `credit`):
    /// how many gifts shared one RPC and one transaction.
    pub const SAGA_HOP_BATCH_ITEMS: &str = "ovation_saga_hop_batch_items";
    /// Counter `{limit}`: requests refused by a velocity limit (`purchases_per_hour`,
    /// `purchase_money_per_hour`, `gifts_per_minute`); each wrote nothing.
    pub const VELOCITY_LIMIT_REFUSALS_TOTAL: &str = "ovation_velocity_limit_refusals_total";

    /// Every name above (alert rules and dashboards are checked against it).
    pub const ALL: [&str; 15] = [
        RPC_REQUESTS_TOTAL,
        RPC_DURATION_SECONDS,
        SAGA_OUTCOMES_TOTAL,
        SAGA_STEP_DURATION_SECONDS,
        SAGAS_NEEDING_OPERATOR,
        DB_POOL_CONNECTIONS,
        SAGAS_IN_FLIGHT,
        SAGA_OLDEST_IN_FLIGHT_AGE_SECONDS,
        FEED_WATCHERS,
        FEED_DELIVERY_LAG_SECONDS,
        LEDGER_COINS,
        LEDGER_DIAMONDS,
        PAYOUTS_NEEDING_ATTENTION,
        SAGA_HOP_BATCH_ITEMS,
        VELOCITY_LIMIT_REFUSALS_TOTAL,
    ];
}

/// Histogram buckets for RPCs and saga steps, in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HopLabels {
    pub hop: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

/// Histogram buckets for batch sizes, in items: 1 to 256 (the batch bound).
pub const BATCH_ITEMS_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

fn batch_items_histogram() -> Histogram {
    Histogram::new(BATCH_ITEMS_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    pub account: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub service: &'static str,
    pub state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// The process's registry and its metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: HistogramFamily<MethodLabels>,
    pub saga_outcomes: Family<StatusLabels, Counter>,
    pub saga_step_duration: HistogramFamily<StepLabels>,
    pub sagas_needing_operator: Gauge<i64, AtomicI64>,
    pub db_pool_connections: Family<PoolLabels, Gauge<i64, AtomicI64>>,
    pub sagas_in_flight: Gauge<i64, AtomicI64>,
    pub saga_oldest_in_flight_age: Gauge<f64, AtomicU64>,
    pub feed_watchers: Gauge<i64, AtomicI64>,
    pub feed_delivery_lag: Histogram,
    pub ledger_coins: Family<AccountLabels, Gauge<i64, AtomicI64>>,
    pub ledger_diamonds: Family<AccountLabels, Gauge<i64, AtomicI64>>,
    pub payouts_needing_attention: Gauge<i64, AtomicI64>,
    pub payout_provider_alerts: Family<KindLabels, Gauge<i64, AtomicI64>>,
    pub saga_hop_batch_items: HistogramFamily<HopLabels>,
    pub velocity_limit_refusals: Family<LimitLabels, Counter>,
}

/// prometheus-client appends `_total` to counters itself.
fn counter_name(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Metrics {
    /// A fresh registry with every Ovation metric registered (tests; the process uses
    /// [`global`]).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            counter_name(names::RPC_REQUESTS_TOTAL),
            "RPCs handled, by gRPC service, method and code",
            rpc_requests.clone(),
        );
        let rpc_duration: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            names::RPC_DURATION_SECONDS,
            "Time from the call to its end, in seconds",
            rpc_duration.clone(),
        );
        let saga_outcomes = Family::<StatusLabels, Counter>::default();
        registry.register(
            counter_name(names::SAGA_OUTCOMES_TOTAL),
            "Gift sagas that reached a final or operator-awaiting status",
            saga_outcomes.clone(),
        );
        let saga_step_duration: HistogramFamily<StepLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            names::SAGA_STEP_DURATION_SECONDS,
            "One attempt of one saga step, in seconds",
            saga_step_duration.clone(),
        );
        let sagas_needing_operator = Gauge::<i64, AtomicI64>::default();
        registry.register(
            names::SAGAS_NEEDING_OPERATOR,
            "Gift sagas in NEEDS_OPERATOR",
            sagas_needing_operator.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            names::DB_POOL_CONNECTIONS,
            "Database pool connections by state (idle, in_use)",
            db_pool_connections.clone(),
        );
        let sagas_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            names::SAGAS_IN_FLIGHT,
            "Gift sagas PENDING (started, no outcome yet)",
            sagas_in_flight.clone(),
        );
        let saga_oldest_in_flight_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            names::SAGA_OLDEST_IN_FLIGHT_AGE_SECONDS,
            "Age of the oldest PENDING gift saga, in seconds",
            saga_oldest_in_flight_age.clone(),
        );
        let feed_watchers = Gauge::<i64, AtomicI64>::default();
        registry.register(
            names::FEED_WATCHERS,
            "Open WatchStreamGifts streams on this replica",
            feed_watchers.clone(),
        );
        let feed_delivery_lag = latency_histogram();
        registry.register(
            names::FEED_DELIVERY_LAG_SECONDS,
            "From a gift event's commit to the outbox to its hand-off to a live watcher, in seconds",
            feed_delivery_lag.clone(),
        );
        let ledger_coins = Family::<AccountLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            names::LEDGER_COINS,
            "Coin ledger balance per account kind (sum of postings)",
            ledger_coins.clone(),
        );
        let ledger_diamonds = Family::<AccountLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            names::LEDGER_DIAMONDS,
            "Diamond ledger balance per account kind (sum of postings)",
            ledger_diamonds.clone(),
        );
        let payouts_needing_attention = Gauge::<i64, AtomicI64>::default();
        registry.register(
            names::PAYOUTS_NEEDING_ATTENTION,
            "HELD payouts past their retry budget, awaiting an operator",
            payouts_needing_attention.clone(),
        );
        let payout_provider_alerts = Family::<KindLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            names::PAYOUT_PROVIDER_ALERTS,
            "Payout provider reports for an operator: reversed transfers of PAID payouts, failed bank payouts",
            payout_provider_alerts.clone(),
        );
        let saga_hop_batch_items: HistogramFamily<HopLabels> =
            Family::new_with_constructor(batch_items_histogram);
        registry.register(
            names::SAGA_HOP_BATCH_ITEMS,
            "Items per batch the gift saga sent to a peer (debit, credit)",
            saga_hop_batch_items.clone(),
        );
        let velocity_limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            counter_name(names::VELOCITY_LIMIT_REFUSALS_TOTAL),
            "Requests refused by a velocity limit, by limit",
            velocity_limit_refusals.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            saga_outcomes,
            saga_step_duration,
            sagas_needing_operator,
            db_pool_connections,
            sagas_in_flight,
            saga_oldest_in_flight_age,
            feed_watchers,
            feed_delivery_lag,
            ledger_coins,
            ledger_diamonds,
            payouts_needing_attention,
            payout_provider_alerts,
            saga_hop_batch_items,
            velocity_limit_refusals,
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A saga reached `status` (`completed`, `rejected`, `compensated`, `needs_operator`).
    pub fn saga_outcome(&self, status: &'static str) {
        self.saga_outcomes
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// One attempt of saga step `step` took `seconds`.
    pub fn saga_step(&self, step: &'static str, seconds: f64) {
        self.saga_step_duration
            .get_or_create(&StepLabels { step })
            .observe(seconds);
    }

    /// The saga sent a batch of `items` on hop `hop` (`debit`, `credit`).
    pub fn hop_batch(&self, hop: &'static str, items: usize) {
        self.saga_hop_batch_items
            .get_or_create(&HopLabels { hop })
            .observe(items as f64);
    }

    /// A request was refused by velocity limit `limit` (see
    /// [`names::VELOCITY_LIMIT_REFUSALS_TOTAL`]).
    pub fn velocity_limit_refused(&self, limit: &'static str) {
        self.velocity_limit_refusals
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    pub fn set_sagas_needing_operator(&self, count: i64) {
        self.sagas_needing_operator.set(count);
    }

    /// The database pool of `service` holds `size` connections, `idle` of them idle.
    pub fn set_db_pool(&self, service: &'static str, size: u32, idle: usize) {
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        self.db_pool_connections
            .get_or_create(&PoolLabels {
                service,
                state: "idle",
            })
            .set(idle);
        self.db_pool_connections
            .get_or_create(&PoolLabels {
                service,
                state: "in_use",
            })
            .set((i64::from(size) - idle).max(0));
    }
}

impl Metrics {
    /// `count` sagas are PENDING, the oldest for `oldest_age_ms` (0 when none).
    pub fn set_sagas_in_flight(&self, count: i64, oldest_age_ms: i64) {
        self.sagas_in_flight.set(count);
        // Milliseconds to seconds; a clock step backwards must not show a negative age.
        self.saga_oldest_in_flight_age
            .set(oldest_age_ms.max(0) as f64 / 1_000.0);
    }

    /// A gift event committed `lag_ms` ago was handed to a live watcher.
    pub fn feed_delivered(&self, lag_ms: i64) {
        self.feed_delivery_lag
            .observe(lag_ms.max(0) as f64 / 1_000.0);
    }

    /// The coin ledger's balance of every account kind: `(account, coins)`.
    pub fn set_ledger_coins(&self, totals: &[(&'static str, i64)]) {
        set_balances(&self.ledger_coins, totals);
    }

    /// The diamond ledger's balance of every account kind: `(account, diamonds)`.
    pub fn set_ledger_diamonds(&self, totals: &[(&'static str, i64)]) {
        set_balances(&self.ledger_diamonds, totals);
    }

    pub fn set_payouts_needing_attention(&self, count: i64) {
        self.payouts_needing_attention.set(count);
    }

    /// The payout provider's alerts: PAID payouts reversed, failed bank payouts.
    pub fn set_payout_provider_alerts(&self, transfers_reversed: i64, bank_payouts_failed: i64) {
        for (kind, count) in [
            ("transfer_reversed", transfers_reversed),
            ("bank_payout_failed", bank_payouts_failed),
        ] {
            self.payout_provider_alerts
                .get_or_create(&KindLabels { kind })
                .set(count);
        }
    }
}

fn set_balances(
    family: &Family<AccountLabels, Gauge<i64, AtomicI64>>,
    totals: &[(&'static str, i64)],
) {
    for &(account, amount) in totals {
        family.get_or_create(&AccountLabels { account }).set(amount);
    }
}

/// Counts one open feed watcher in [`names::FEED_WATCHERS`] while it lives.
#[derive(Debug)]
pub struct FeedWatcherGauge(());

impl FeedWatcherGauge {
    pub fn open() -> FeedWatcherGauge {
        global().feed_watchers.inc();
        FeedWatcherGauge(())
    }
}

impl Drop for FeedWatcherGauge {
    fn drop(&mut self) {
        global().feed_watchers.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics, what `/metrics` serves.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_metric_with_its_labels() {
        let m = Metrics::new();
        m.rpc_requests
            .get_or_create(&RpcLabels {
                service: "ovation.gifting.v1.GiftingService".into(),
                method: "SendGift".into(),
                code: "OK",
            })
            .inc();
        m.rpc_duration
            .get_or_create(&MethodLabels {
                service: "ovation.gifting.v1.GiftingService".into(),
                method: "SendGift".into(),
            })
            .observe(0.003);
        m.saga_outcome("completed");
        m.saga_outcome("completed");
        m.saga_step("debit_coins", 0.02);
        m.set_sagas_needing_operator(3);
        m.set_db_pool("gifting", 4, 1);
        m.set_sagas_in_flight(2, 1_500);
        m.feed_delivered(20);
        m.set_ledger_coins(&[("user", 90), ("issuance", -100), ("gift_sink", 10)]);
        m.set_ledger_diamonds(&[("creator", 7), ("gift_issuance", -7)]);
        m.set_payouts_needing_attention(1);
        m.hop_batch("debit", 3);
        m.velocity_limit_refused("gifts_per_minute");
        let text = m.encode();
        for name in names::ALL {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                "ovation_rpc_requests_total{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\",code=\"OK\"} 1"
            ),
            "{text}"
        );
        assert!(
            has("ovation_saga_outcomes_total{status=\"completed\"} 2"),
            "{text}"
        );
        assert!(
            has("ovation_saga_step_duration_seconds_count{step=\"debit_coins\"} 1"),
            "{text}"
        );
        assert!(has("ovation_sagas_needing_operator 3"), "{text}");
        assert!(
            has("ovation_db_pool_connections{service=\"gifting\",state=\"in_use\"} 3"),
            "{text}"
        );
        assert!(has("ovation_sagas_in_flight 2"), "{text}");
        assert!(
            has("ovation_saga_oldest_in_flight_age_seconds 1.5"),
            "{text}"
        );
        assert!(has("ovation_feed_delivery_lag_seconds_count 1"), "{text}");
        assert!(
            has("ovation_ledger_coins{account=\"issuance\"} -100"),
            "{text}"
        );
        assert!(
            has("ovation_ledger_diamonds{account=\"creator\"} 7"),
            "{text}"
        );
        assert!(has("ovation_payouts_needing_attention 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn grpc_codes_have_their_canonical_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(5), "NOT_FOUND");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
    }
}
