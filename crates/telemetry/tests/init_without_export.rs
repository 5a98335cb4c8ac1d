//! `init` without an OTLP endpoint: nothing is exported, but spans still get trace ids and
//! the W3C context is still propagated. `init` is process-global, so this binary holds one test.

use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[test]
fn propagation_works_without_export() {
    // SAFETY: this binary has a single test and no thread of ours has started yet.
    unsafe {
        std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        std::env::set_var("RUST_LOG", "warn");
    }
    let guard = ovation_telemetry::init("no-export").unwrap();
    assert!(guard.is_active());
    assert!(!guard.is_exporting());
    assert!(!ovation_telemetry::init("again").unwrap().is_active());

    let span = tracing::info_span!("work");
    let span_context = span.context().span().span_context().clone();
    assert!(span_context.is_valid(), "spans still get trace ids");

    let mut metadata = tonic::metadata::MetadataMap::new();
    span.in_scope(|| ovation_telemetry::inject_trace_context(&mut metadata));
    assert_eq!(
        metadata.get("traceparent").unwrap().to_str().unwrap(),
        format!(
            "00-{}-{}-01",
            span_context.trace_id(),
            span_context.span_id()
        )
    );
    drop(span);

    let started = Instant::now();
    guard.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}
