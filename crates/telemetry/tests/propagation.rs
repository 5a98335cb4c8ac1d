//! A real tonic server with `RpcSpanLayer` (serving tonic-health) called by a real client with
//! `TracePropagation`: the server's `rpc` span must join the client's trace.
//!
//! The subscriber is scoped to the test thread (`set_default`), so these tests run on
//! current-thread runtimes: the server's connection tasks are polled on that same thread and
//! see the scoped subscriber. Spans are exported synchronously to an in-memory exporter.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use ovation_telemetry::{RpcSpanLayer, TracePropagation};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing::subscriber::DefaultGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const SERVED: &str = "ovation.test.v1.Probe";

/// A scoped subscriber with the OpenTelemetry layer feeding an in-memory exporter.
fn scoped_subscriber() -> (InMemorySpanExporter, SdkTracerProvider, DefaultGuard) {
    ovation_telemetry::install_propagator();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("propagation-test")));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

async fn start_health_server() -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVED, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Keep the reporter alive for as long as the server runs.
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

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

async fn client(addr: SocketAddr) -> HealthClient<InterceptedService<Channel, TracePropagation>> {
    HealthClient::with_interceptor(channel(addr).await, TracePropagation)
}

/// Waits for the server's `rpc` spans (they end when the server drops the call's future,
/// which can be a moment after the client has its response).
async fn rpc_spans(exporter: &InMemorySpanExporter, count: usize) -> Vec<SpanData> {
    for _ in 0..200 {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.name.starts_with("grpc.health.v1.Health/"))
            .collect();
        if spans.len() >= count {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {count} rpc span(s), got {:?}",
        exporter.get_finished_spans().unwrap()
    );
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test]
async fn server_span_joins_the_callers_trace() {
    let (exporter, _provider, _guard) = scoped_subscriber();
    let addr = start_health_server().await;
    let mut client = client(addr).await;

    let parent = tracing::info_span!("client_parent");
    let parent_context = parent.context();
    let parent_span_context = parent_context.span().span_context().clone();
    assert!(parent_span_context.is_valid());

    let response = client
        .check(HealthCheckRequest {
            service: SERVED.to_owned(),
        })
        .instrument(parent.clone())
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
    drop(parent);

    let spans = rpc_spans(&exporter, 1).await;
    let rpc = &spans[0];
    assert_eq!(rpc.name, "grpc.health.v1.Health/Check");
    assert_eq!(rpc.span_kind, SpanKind::Server);
    assert_eq!(
        rpc.span_context.trace_id(),
        parent_span_context.trace_id(),
        "server span is not in the client's trace"
    );
    assert_eq!(rpc.parent_span_id, parent_span_context.span_id());
    assert!(rpc.parent_span_is_remote);
    assert_eq!(
        attribute(rpc, "rpc.system"),
        Some(&Value::from("grpc")),
        "{rpc:?}"
    );
    assert_eq!(
        attribute(rpc, "rpc.service"),
        Some(&Value::from("grpc.health.v1.Health"))
    );
    assert_eq!(attribute(rpc, "rpc.method"), Some(&Value::from("Check")));
    assert_eq!(
        attribute(rpc, "ovation.service"),
        Some(&Value::from("health-test"))
    );
    // A successful unary call sends grpc-status in trailers: only the HTTP status is seen.
    assert_eq!(
        attribute(rpc, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(attribute(rpc, "rpc.grpc.status_code"), None);
    assert_eq!(rpc.status, Status::Unset);

    // The client's parent span is exported too, in the same trace, as a root.
    let all = exporter.get_finished_spans().unwrap();
    let client_parent = all
        .iter()
        .find(|span| span.name == "client_parent")
        .expect("client parent span exported");
    assert_eq!(client_parent.span_context, parent_span_context);
    assert_eq!(client_parent.parent_span_id, SpanId::INVALID);
}

#[tokio::test]
async fn error_status_is_recorded_and_untraced_calls_start_a_new_trace() {
    let (exporter, _provider, _guard) = scoped_subscriber();
    let addr = start_health_server().await;
    let mut client = client(addr).await;

    // No current span: nothing is injected and the server span is a root.
    let status = client
        .check(HealthCheckRequest {
            service: "ovation.test.v1.Unknown".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let spans = rpc_spans(&exporter, 1).await;
    let rpc = &spans[0];
    assert_eq!(rpc.parent_span_id, SpanId::INVALID);
    assert!(rpc.span_context.is_valid());
    // tonic sends a handler's error as a trailers-only response: the status is in the head.
    assert_eq!(
        attribute(rpc, "rpc.grpc.status_code"),
        Some(&Value::I64(tonic::Code::NotFound as i64))
    );
    // NOT_FOUND is the caller's problem, not a server failure.
    assert_eq!(rpc.status, Status::Unset);
}

#[tokio::test]
async fn unimplemented_method_marks_the_span_as_failed() {
    let (exporter, _provider, _guard) = scoped_subscriber();
    let addr = start_health_server().await;

    // An unknown method on a served service: tonic answers UNIMPLEMENTED (trailers-only).
    let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
        channel(addr).await,
        TracePropagation,
    ));
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<HealthCheckRequest, tonic_health::pb::HealthCheckResponse, _>(
            tonic::Request::new(HealthCheckRequest::default()),
            "/grpc.health.v1.Health/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    let spans = rpc_spans(&exporter, 1).await;
    let rpc = &spans[0];
    assert_eq!(rpc.name, "grpc.health.v1.Health/NoSuchMethod");
    assert_eq!(
        attribute(rpc, "rpc.grpc.status_code"),
        Some(&Value::I64(tonic::Code::Unimplemented as i64))
    );
    assert!(
        matches!(rpc.status, Status::Error { .. }),
        "{:?}",
        rpc.status
    );
}

#[tokio::test]
async fn handlers_run_inside_the_rpc_span_and_propagate_it() {
    let (exporter, _provider, _guard) = scoped_subscriber();

    // A handler that records the trace context it would send downstream.
    let handler = tower::service_fn(|_request: http::Request<()>| async {
        let mut metadata = tonic::metadata::MetadataMap::new();
        ovation_telemetry::inject_trace_context(&mut metadata);
        let traceparent = metadata
            .get("traceparent")
            .map(|value| value.to_str().unwrap().to_owned());
        Ok::<_, std::convert::Infallible>(http::Response::new(traceparent))
    });
    let service = tower::ServiceBuilder::new()
        .layer(RpcSpanLayer::new("catalog"))
        .service(handler);

    let request = http::Request::builder()
        .uri("/ovation.catalog.v1.CatalogService/GetGift")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .unwrap();
    let response = tower::ServiceExt::oneshot(service, request).await.unwrap();
    let downstream = response.into_body().expect("handler saw a trace context");

    let spans = exporter.get_finished_spans().unwrap();
    let rpc = spans
        .iter()
        .find(|span| span.name == "ovation.catalog.v1.CatalogService/GetGift")
        .expect("rpc span exported");
    assert_eq!(
        rpc.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(rpc.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        attribute(rpc, "rpc.service"),
        Some(&Value::from("ovation.catalog.v1.CatalogService"))
    );
    assert_eq!(attribute(rpc, "rpc.method"), Some(&Value::from("GetGift")));
    assert_eq!(
        attribute(rpc, "ovation.service"),
        Some(&Value::from("catalog"))
    );
    // Downstream calls made by the handler are children of the rpc span.
    assert_eq!(
        downstream,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            rpc.span_context.span_id()
        )
    );
}
