//! End to end through `init`: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-process
//! OTLP/gRPC collector, the spans of a real RPC (served behind `RpcSpanLayer`, called with
//! `TracePropagation`) reach the collector when the guard is dropped — inside an async task on
//! a current-thread runtime, which must not hang.
//!
//! `init` installs the process-global subscriber, so this binary holds exactly one test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, span::SpanKind};
use ovation_telemetry::{RpcSpanLayer, TracePropagation};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

const SERVED: &str = "ovation.test.v1.Probe";

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
            .unwrap()
            .extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Runs the collector on its own thread and runtime, as a real collector would be: the
/// application's runtime is blocked while the guard flushes.
fn start_collector(listener: std::net::TcpListener, collector: Collector) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
    });
}

async fn start_health_server() -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVED, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .layer(RpcSpanLayer::new("health-test"))
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
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

#[test]
fn spans_reach_the_otlp_collector_when_the_guard_drops() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let collector_addr = listener.local_addr().unwrap();
    // SAFETY: this binary has a single test and no thread of ours has started yet; nothing
    // else reads or writes the environment concurrently.
    unsafe {
        std::env::set_var(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        );
        std::env::set_var("RUST_LOG", "warn");
    }
    let collector = Collector::default();
    start_collector(listener, collector.clone());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (caller_trace_id, caller_span_id) = runtime.block_on(async {
        let guard = ovation_telemetry::init("otlp-export-test").unwrap();
        assert!(guard.is_active());
        assert!(guard.is_exporting());
        let second = ovation_telemetry::init("another-service").unwrap();
        assert!(!second.is_active(), "a second init must do nothing");
        drop(second);

        let addr = start_health_server().await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::with_interceptor(channel, TracePropagation);

        let caller = tracing::info_span!("caller");
        let ids = {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let cx = caller.context();
            let span = cx.span();
            let span_context = span.span_context();
            (
                span_context.trace_id().to_bytes().to_vec(),
                span_context.span_id().to_bytes().to_vec(),
            )
        };
        client
            .check(HealthCheckRequest {
                service: SERVED.to_owned(),
            })
            .instrument(caller.clone())
            .await
            .unwrap();
        drop(caller);
        // Let the server drop the call's future (which ends its span).
        tokio::time::sleep(Duration::from_millis(50)).await;

        let started = Instant::now();
        drop(guard);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "flushing took {:?}: the export did not complete",
            started.elapsed()
        );
        ids
    });

    let received = collector.received.lock().unwrap().clone();
    let resource = received
        .first()
        .and_then(|rs| rs.resource.as_ref())
        .expect("the collector received spans");
    assert_eq!(
        string_attribute(&resource.attributes, "service.name"),
        Some("otlp-export-test")
    );
    let spans: Vec<&Span> = received
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();

    let caller = spans
        .iter()
        .find(|span| span.name == "caller")
        .expect("caller span exported");
    assert_eq!(caller.trace_id, caller_trace_id);
    assert_eq!(caller.span_id, caller_span_id);

    let rpc = spans
        .iter()
        .find(|span| span.name == "grpc.health.v1.Health/Check")
        .unwrap_or_else(|| panic!("rpc span exported; got {spans:#?}"));
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(rpc.trace_id, caller_trace_id);
    assert_eq!(rpc.parent_span_id, caller_span_id);
    assert_eq!(
        string_attribute(&rpc.attributes, "ovation.service"),
        Some("health-test")
    );
    assert_eq!(
        string_attribute(&rpc.attributes, "rpc.service"),
        Some("grpc.health.v1.Health")
    );

    // The exporter's own gRPC traffic is not traced.
    assert!(
        spans.iter().all(|span| !span.name.contains("TraceService")),
        "{spans:#?}"
    );
}
