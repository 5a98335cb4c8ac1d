//! A `tower` layer that gives every incoming gRPC call its own `rpc` span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::extract_trace_context;

/// A [`tower::Layer`] for tonic servers: one `rpc` span per call, parented on the caller's
/// W3C trace context (`traceparent`/`tracestate` request headers).
///
/// ```no_run
/// # async fn serve(routes: tonic::service::Routes) -> Result<(), tonic::transport::Error> {
/// tonic::transport::Server::builder()
///     .layer(ovation_telemetry::RpcSpanLayer::new("catalog"))
///     .add_routes(routes)
///     .serve("127.0.0.1:50051".parse().unwrap())
///     .await
/// # }
/// ```
///
/// `service_label` is recorded as the `ovation.service` attribute, so that spans of several
/// services sharing one process (and one `service.name`) can be told apart.
#[derive(Clone, Copy, Debug)]
pub struct RpcSpanLayer {
    service_label: &'static str,
}

impl RpcSpanLayer {
    /// A layer whose spans carry `ovation.service = service_label`.
    pub fn new(service_label: &'static str) -> Self {
        Self { service_label }
    }
}

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpanService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpanService {
            inner,
            service_label: self.service_label,
        }
    }
}

/// The service produced by [`RpcSpanLayer`].
#[derive(Clone, Debug)]
pub struct RpcSpanService<S> {
    inner: S,
    service_label: &'static str,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcSpanService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = RpcSpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = rpc_span(&request, self.service_label);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        RpcSpanFuture {
            inner: Box::pin(inner),
            span,
        }
    }
}

/// The response future of [`RpcSpanService`]: polls the inner future inside the call's span
/// and records the status once the response head is ready.
pub struct RpcSpanFuture<F> {
    inner: Pin<Box<F>>,
    span: Span,
}

impl<F> std::fmt::Debug for RpcSpanFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcSpanFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RpcSpanFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let output = std::task::ready!(this.inner.as_mut().poll(cx));
        match &output {
            Ok(response) => record_response(&this.span, response),
            // The inner service failed below gRPC (tonic turns handler errors into
            // responses), so there is no status to record.
            Err(_) => {
                this.span.record("otel.status_code", "error");
            }
        }
        Poll::Ready(output)
    }
}

fn rpc_span<B>(request: &http::Request<B>, service_label: &'static str) -> Span {
    let path = request.uri().path();
    let full_method = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = full_method.rsplit_once('/').unwrap_or(("", full_method));
    let span = tracing::info_span!(
        parent: None,
        "rpc",
        otel.name = %full_method,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        ovation.service = service_label,
        rpc.grpc.status_code = Empty,
        http.response.status_code = Empty,
    );
    let parent = extract_trace_context(request.headers());
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or no OpenTelemetry layer is installed; the
        // span then has nothing to be parented.
        let _ = span.set_parent(parent);
    }
    span
}

fn record_response<R>(span: &Span, response: &http::Response<R>) {
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok());
    match grpc_status {
        Some(code) => {
            span.record("rpc.grpc.status_code", i64::from(code));
            if is_server_error(code) {
                span.record("otel.status_code", "error");
            }
        }
        None => {
            // As i64: tracing-opentelemetry turns unsigned integers into strings.
            span.record(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            );
            if !response.status().is_success() {
                span.record("otel.status_code", "error");
            }
        }
    }
}

/// gRPC codes that mark a server span as failed under the OpenTelemetry gRPC semantic
/// conventions: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_codes() {
        let failed: Vec<i32> = (0..=16).filter(|code| is_server_error(*code)).collect();
        assert_eq!(failed, vec![2, 4, 12, 13, 14, 15]);
    }

    fn assert_service<S>(_: &S)
    where
        S: tower::Service<http::Request<tonic::body::Body>> + Clone + Send + 'static,
        S::Future: Send,
    {
    }

    #[test]
    fn layered_routes_meet_tonic_bounds() {
        let layered = tower::Layer::layer(
            &RpcSpanLayer::new("test"),
            tonic::service::Routes::default(),
        );
        assert_service(&layered);
    }
}
