//! One SendGift yields spans from all four services under one trace id: the four
//! services run as separate processes exporting OTLP/gRPC to a collector in this test;
//! the gift is sent with a W3C `traceparent` naming a trace id the test chose; the
//! services are stopped with SIGTERM so their batch span processors flush; then the
//! spans of that trace must come from `service.name` catalog, wallet, payout and gifting.
//! And a saga resumed by another gifting process after a crash continues the trace of the
//! request that started it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ovation_e2e::on_sqlite_and_postgres;
use ovation_e2e::process_suite::*;
use ovation_proto::gifting as pb;

/// An OTLP/gRPC trace collector keeping everything it receives.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ResourceSpans>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One exported span, flattened: (service.name, span name, trace id, span id, parent id).
#[derive(Debug)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

fn flatten(received: &[ResourceSpans]) -> Vec<Exported> {
    let mut all = Vec::new();
    for rs in received {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, "service.name"))
            .unwrap_or("(no service.name)")
            .to_owned();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                all.push(Exported {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    all
}

/// An OTLP collector on a loopback port: the collector, its address, its server task.
async fn start_collector() -> (
    Collector,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the collector");
    let collector_addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let collector = Collector::default();
    let server = tokio::spawn({
        let collector = collector.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        }
    });
    (collector, collector_addr, server)
}

/// Suite options that make every service export its spans to `collector`.
fn exporting_to(collector: std::net::SocketAddr) -> SuiteOptions {
    SuiteOptions {
        env: vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{collector}"),
        )],
        ..SuiteOptions::default()
    }
}

impl Collector {
    /// Every span received so far, flattened.
    fn spans(&self) -> Vec<Exported> {
        flatten(&self.received.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A SendGift request carrying a sampled W3C trace of the test's choosing: (request,
/// trace id, parent span id).
fn traced_send(
    key: &str,
    viewer: &str,
    creator: &str,
) -> (tonic::Request<pb::SendGiftRequest>, String, String) {
    let trace_id = hex(&uuid::Uuid::new_v4().into_bytes());
    let parent_span_id = hex(&uuid::Uuid::new_v4().into_bytes()[..8]);
    let mut request = tonic::Request::new(pb::SendGiftRequest {
        idempotency_key: key.into(),
        sender_user_id: viewer.into(),
        creator_id: creator.into(),
        stream_id: "stream-traced".into(),
        gift_id: "doughnut".into(),
        quantity: 1,
        message: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span_id}-01")
            .parse()
            .expect("a valid traceparent"),
    );
    (request, trace_id, parent_span_id)
}

async fn one_send_gift_is_one_trace_across_four_services(backend: Backend) {
    let (collector, collector_addr, server) = start_collector().await;

    let options = exporting_to(collector_addr);
    let Some(suite) = Suite::start(backend, options).await else {
        server.abort();
        return;
    };
    suite.funded_viewer("tess", "coins_100").await;
    suite.creator("uma").await;

    // The caller's trace: a trace id and parent span id of the test's choosing, sampled.
    let (request, trace_id, parent_span_id) = traced_send("traced-gift", "tess", "uma");
    let receipt = suite.receipt_of(request).await;
    if receipt.status != COMPLETED {
        suite.fail(format!("the traced gift did not complete: {receipt:?}"));
    }

    // SIGTERM: each service drops its telemetry guard, which flushes the batch processor.
    let backend_name = suite.backend;
    suite.stop().await;
    server.abort();

    let spans = collector.spans();
    let in_trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let services: BTreeSet<&str> = in_trace.iter().map(|s| s.service.as_str()).collect();
    let expected: BTreeSet<&str> = ["catalog", "gifting", "payout", "wallet"].into();
    if services != expected {
        // What did arrive, per service and trace, to tell a lost export from a broken
        // propagation.
        let mut by_service: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in &spans {
            by_service
                .entry(s.service.as_str())
                .or_default()
                .push(format!(
                    "{} trace {}{} span {} parent {}",
                    s.name,
                    s.trace_id,
                    if s.trace_id == trace_id {
                        " (the gift's)"
                    } else {
                        ""
                    },
                    s.span_id,
                    s.parent_span_id
                ));
        }
        panic!(
            "[{backend_name}] the SendGift's trace {trace_id} has spans from {services:?}, \
             expected {expected:?}. Everything exported, by service.name:\n{by_service:#?}"
        );
    }
    // The gifting span is the caller's child.
    let send = in_trace
        .iter()
        .find(|s| s.service == "gifting" && s.name.ends_with("/SendGift"))
        .unwrap_or_else(|| panic!("[{backend_name}] no SendGift span in the trace: {in_trace:#?}"));
    assert_eq!(
        send.parent_span_id, parent_span_id,
        "[{backend_name}] SendGift's span is not the caller's child"
    );
    // The saga's three calls are in the trace, one per service.
    for (service, method) in [
        ("catalog", "/QuoteGift"),
        ("wallet", "/DebitCoinsBatch"),
        ("payout", "/CreditDiamondsBatch"),
    ] {
        assert!(
            in_trace
                .iter()
                .any(|s| s.service == service && s.name.ends_with(method)),
            "[{backend_name}] no {service}{method} span in the trace: {in_trace:#?}"
        );
    }
}

on_sqlite_and_postgres!(
    one_send_gift_is_one_trace_across_four_services,
    one_send_gift_yields_spans_from_all_four_services_under_one_trace_id_sqlite,
    one_send_gift_yields_spans_from_all_four_services_under_one_trace_id_postgres
);

/// Payout is down, so the saga stops at the credit (PENDING); the gifting process is killed;
/// payout comes back; a new gifting process resumes the saga from the database. Payout's
/// CreditDiamonds, which only the resumed saga can have called, is in the trace of the
/// original SendGift, under gifting's `resume_saga` span.
async fn a_resumed_saga_continues_the_trace_of_its_request(backend: Backend) {
    let (collector, collector_addr, server) = start_collector().await;
    let options = exporting_to(collector_addr);
    let Some(mut suite) = Suite::start(backend, options).await else {
        server.abort();
        return;
    };
    suite.funded_viewer("vic", "coins_100").await;
    suite.creator("wes").await;
    suite.payout.kill_hard().await;

    let (request, trace_id, _) = traced_send("resumed-gift", "vic", "wes");
    let receipt = suite.receipt_of(request).await;
    if receipt.status != PENDING {
        suite.fail(format!(
            "with payout down the gift must wait at the credit: {receipt:?}"
        ));
    }
    suite.gifting[0].kill_hard().await;
    suite.payout.start().await;
    suite.gifting[0].start().await;
    let sagas = suite
        .settle(0, Some(1), std::time::Duration::from_secs(60))
        .await;
    if sagas.iter().any(|s| status(s) != COMPLETED) {
        suite.fail(format!(
            "the resumed saga did not complete: {}",
            describe(&sagas.iter().collect::<Vec<_>>())
        ));
    }
    let backend_name = suite.backend;
    suite.stop().await;
    server.abort();

    let spans = collector.spans();
    let in_trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let credit = in_trace
        .iter()
        .find(|s| s.service == "payout" && s.name.ends_with("/CreditDiamondsBatch"));
    let resume = in_trace
        .iter()
        .find(|s| s.service == "gifting" && s.name == "resume_saga");
    if credit.is_none() || resume.is_none() {
        let elsewhere: Vec<String> = spans
            .iter()
            .filter(|s| s.name.ends_with("/CreditDiamondsBatch") || s.name == "resume_saga")
            .map(|s| format!("{} {} trace {}", s.service, s.name, s.trace_id))
            .collect();
        panic!(
            "[{backend_name}] the resumed saga left the trace {trace_id} of its request \
             (CreditDiamonds in it: {}, resume_saga in it: {}); those spans were in: {elsewhere:#?}",
            credit.is_some(),
            resume.is_some()
        );
    }
}

on_sqlite_and_postgres!(
    a_resumed_saga_continues_the_trace_of_its_request,
    a_resumed_saga_continues_the_trace_of_its_request_sqlite,
    a_resumed_saga_continues_the_trace_of_its_request_postgres
);
