//! The RPC metrics tower layer.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::{MethodLabels, RpcLabels, global};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts and times every RPC into [`crate::names::RPC_REQUESTS_TOTAL`] and
/// [`crate::names::RPC_DURATION_SECONDS`] of the [`global`] registry.
///
/// Only the gRPC services given to [`RpcMetricsLayer::new`] get their own `service` label;
/// any other path, and any method answered UNIMPLEMENTED, is counted as `unknown`, so a
/// caller cannot grow the label sets at will.
#[derive(Clone, Debug)]
pub struct RpcMetricsLayer {
    known_services: Arc<[&'static str]>,
}

impl RpcMetricsLayer {
    /// `known_services`: fully-qualified gRPC services this server serves
    /// (`ovation.gifting.v1.GiftingService`, `grpc.health.v1.Health`, …).
    pub fn new(known_services: &[&'static str]) -> Self {
        RpcMetricsLayer {
            known_services: known_services.into(),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            known_services: self.known_services.clone(),
        }
    }
}

/// The service produced by [`RpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetricsService<S> {
    inner: S,
    known_services: Arc<[&'static str]>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = RpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path(), &self.known_services);
        RpcMetricsFuture {
            inner: Box::pin(self.inner.call(request)),
            labels: Some(MethodLabels { service, method }),
            started: Instant::now(),
        }
    }
}

/// `/pkg.Service/Method` → (service, method), `unknown` for what this server does not serve.
fn split_path(path: &str, known: &[&'static str]) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    if known.contains(&service) && !method.is_empty() && !method.contains('/') {
        (service.to_owned(), method.to_owned())
    } else {
        ("unknown".to_owned(), "unknown".to_owned())
    }
}

/// The response future of [`RpcMetricsService`]: records once the response head is ready.
pub struct RpcMetricsFuture<F> {
    inner: Pin<Box<F>>,
    labels: Option<MethodLabels>,
    started: Instant,
}

impl<F> std::fmt::Debug for RpcMetricsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetricsFuture")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let output = std::task::ready!(this.inner.as_mut().poll(cx));
        if let Some(labels) = this.labels.take() {
            let code = match &output {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .map_or("OK", grpc_code_name),
                Err(e) => error_code(e),
            };
            record(labels, code, this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(output)
    }
}

fn record(mut labels: MethodLabels, code: &'static str, seconds: f64) {
    if code == "UNIMPLEMENTED" {
        "unknown".clone_into(&mut labels.method);
    }
    let metrics = global();
    metrics.rpc_duration.get_or_create(&labels).observe(seconds);
    metrics
        .rpc_requests
        .get_or_create(&RpcLabels {
            service: labels.service,
            method: labels.method,
            code,
        })
        .inc();
}

/// The code tonic will answer for an error of the layers below (load shedding is the one
/// expected here); anything else is UNKNOWN.
fn error_code<E: 'static>(error: &E) -> &'static str {
    let error: Option<&(dyn std::error::Error + 'static)> =
        if let Some(boxed) = (error as &dyn Any).downcast_ref::<BoxError>() {
            Some(boxed.as_ref())
        } else {
            None
        };
    match error {
        Some(e) if e.is::<tower::load_shed::error::Overloaded>() => "RESOURCE_EXHAUSTED",
        Some(e) if e.is::<tower::timeout::error::Elapsed>() => "CANCELLED",
        _ => "UNKNOWN",
    }
}

/// The canonical name of a gRPC status code (`5` → `NOT_FOUND`).
pub fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_unknown_services_collapse_to_unknown() {
        let known = ["ovation.gifting.v1.GiftingService"];
        assert_eq!(
            split_path("/ovation.gifting.v1.GiftingService/SendGift", &known),
            (
                "ovation.gifting.v1.GiftingService".to_owned(),
                "SendGift".to_owned()
            )
        );
        assert_eq!(
            split_path("/evil.Service/X", &known),
            ("unknown".to_owned(), "unknown".to_owned())
        );
        assert_eq!(
            split_path("/", &known),
            ("unknown".to_owned(), "unknown".to_owned())
        );
    }
}
