//! W3C trace-context propagation over gRPC metadata and HTTP headers.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Injects the OpenTelemetry context of the current `tracing` span into outgoing gRPC
/// metadata (`traceparent` and, when present, `tracestate`), using the global propagator.
///
/// When the current span carries no OpenTelemetry context (no subscriber with the
/// OpenTelemetry layer, or no span at all), the ambient OpenTelemetry context is used; when
/// that is empty too, nothing is injected.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let mut cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        cx = opentelemetry::Context::current();
    }
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// The current span's W3C `traceparent`, if it is in a valid trace: kept with work that
/// outlives its request (a saga), so that resuming the work later continues the same trace.
pub fn current_traceparent() -> Option<String> {
    let mut cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        cx = opentelemetry::Context::current();
    }
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut fields);
    });
    fields.remove("traceparent")
}

/// Makes `span` (new, not entered yet) continue the trace of a stored `traceparent` (from
/// [`current_traceparent`]); left alone, as a new trace, when it is empty or malformed.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let mut fields = std::collections::HashMap::new();
    fields.insert("traceparent".to_owned(), traceparent.to_owned());
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&fields));
    if parent.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer, where there is no trace to join.
        let _ = span.set_parent(parent);
    }
}

/// Extracts the remote OpenTelemetry context (W3C `traceparent`/`tracestate`) from HTTP
/// headers, using the global propagator. The result has no valid span when the headers carry
/// no (or a malformed) `traceparent`.
pub fn extract_trace_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// A [`tonic::service::Interceptor`] that adds the current span's W3C trace context to every
/// outgoing request: `FooClient::with_interceptor(channel, TracePropagation)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

impl tonic::service::Interceptor for TracePropagation {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator only produces lower-case ASCII keys and visible-ASCII values;
        // anything else is skipped rather than failing the call.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote_context() -> opentelemetry::Context {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span_context)
    }

    #[test]
    fn injects_ambient_context_and_extracts_it_back() {
        crate::install_propagator();
        let _attached = remote_context().attach();

        let mut metadata = MetadataMap::new();
        inject_trace_context(&mut metadata);
        assert_eq!(
            metadata.get("traceparent").unwrap().to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );

        let headers = metadata.into_headers();
        let extracted = extract_trace_context(&headers);
        let span = extracted.span();
        let extracted = span.span_context();
        assert!(extracted.is_remote());
        assert_eq!(
            extracted.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            extracted.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
    }

    #[test]
    fn a_stored_traceparent_round_trips() {
        crate::install_propagator();
        let _attached = remote_context().attach();
        assert_eq!(
            current_traceparent().as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn injects_nothing_without_a_context() {
        crate::install_propagator();
        let mut metadata = MetadataMap::new();
        inject_trace_context(&mut metadata);
        assert!(metadata.is_empty());
    }

    #[test]
    fn malformed_traceparent_yields_no_parent() {
        crate::install_propagator();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
        assert!(
            !extract_trace_context(&headers)
                .span()
                .span_context()
                .is_valid()
        );
    }
}
