//! The RPC metrics tower layer.
//!
//! A gRPC call's status comes either in the response head ("trailers-only": tonic sends
//! every handler `Err(Status)`, every refusal of the auth layer and every UNIMPLEMENTED
//! that way) or in the trailers at the end of the response body (every successful call, and
//! any stream that fails after it started). The layer records at once in the first case;
//! in the second it wraps the body in [`RpcMetricsBody`] and records when the body ends.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};

use crate::{MethodLabels, RpcLabels, global};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts and times every RPC into [`crate::names::RPC_REQUESTS_TOTAL`] and
/// [`crate::names::RPC_DURATION_SECONDS`] of the [`global`] registry, exactly once per call.
///
/// Only the gRPC services given to [`RpcMetricsLayer::new`] get their own `service` label;
/// any other path, and any method answered UNIMPLEMENTED, is counted as `unknown`, so a
/// caller cannot grow the label sets at will.
///
/// When and with which code a call is recorded:
///
/// - the response head carries `grpc-status` (trailers-only): when the head is ready, with
///   that code;
/// - otherwise, when the response body ends ([`RpcMetricsBody`]): with the `grpc-status`
///   of its trailers; `INTERNAL` if the body fails (hyper then resets the HTTP/2 stream
///   with `INTERNAL_ERROR`, which the client reads as `INTERNAL`); if the body ends
///   without a `grpc-status` (no trailers, or trailers without it), the code a gRPC client
///   infers, as tonic and grpc-go do: `UNKNOWN` for HTTP 200, else mapped from the HTTP
///   status (404 → `UNIMPLEMENTED`, 503 → `UNAVAILABLE`, …);
/// - the layers below fail (no response): `RESOURCE_EXHAUSTED` for load shedding,
///   `CANCELLED` for a tower timeout, `UNKNOWN` otherwise;
/// - the call is dropped before it ended (the response future before the head, e.g. by
///   tonic's `grpc-timeout`, or the body before its end, e.g. the client went away or
///   cancelled a stream): `CANCELLED`.
///
/// The duration runs from the call until that record.
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
    R: Body,
{
    type Response = http::Response<RpcMetricsBody<R>>;
    type Error = S::Error;
    type Future = RpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path(), &self.known_services);
        let pending = Pending {
            labels: Some(MethodLabels { service, method }),
            started: Instant::now(),
        };
        RpcMetricsFuture {
            inner: Box::pin(self.inner.call(request)),
            pending: Some(pending),
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

/// A call not recorded yet. Recording takes the labels, so it happens at most once; one
/// dropped unrecorded is recorded `CANCELLED`.
struct Pending {
    labels: Option<MethodLabels>,
    started: Instant,
}

impl Pending {
    fn is_recorded(&self) -> bool {
        self.labels.is_none()
    }

    fn finish(&mut self, code: &'static str) {
        if let Some(labels) = self.labels.take() {
            record(labels, code, self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// The response future of [`RpcMetricsService`]: records when the response head carries
/// the status or the layers below fail, else hands the call over to the [`RpcMetricsBody`].
/// Dropped before the head is ready, it records `CANCELLED`.
pub struct RpcMetricsFuture<F> {
    inner: Pin<Box<F>>,
    pending: Option<Pending>,
}

impl<F> std::fmt::Debug for RpcMetricsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetricsFuture")
            .field(
                "labels",
                &self.pending.as_ref().and_then(|p| p.labels.as_ref()),
            )
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: 'static,
    R: Body,
{
    type Output = Result<http::Response<RpcMetricsBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let output = std::task::ready!(this.inner.as_mut().poll(cx));
        let mut pending = this.pending.take().unwrap_or(Pending {
            labels: None,
            started: Instant::now(),
        });
        let response = match output {
            Ok(response) => response,
            Err(e) => {
                pending.finish(error_code(&e));
                return Poll::Ready(Err(e));
            }
        };
        let no_status = code_without_grpc_status(response.status());
        if let Some(code) = grpc_status(response.headers()) {
            pending.finish(code);
        } else if response.body().is_end_stream() {
            // Nothing will come: hyper will not even poll the body.
            pending.finish(no_status);
        }
        Poll::Ready(Ok(response.map(|body| RpcMetricsBody {
            inner: Box::pin(body),
            pending,
            no_status,
        })))
    }
}

/// The response body of [`RpcMetricsService`]: records the call when the body ends (with
/// the trailers' `grpc-status`), fails, or is dropped before its end (`CANCELLED`), unless
/// it was recorded already from the response head. Frames, [`Body::is_end_stream`] and
/// [`Body::size_hint`] are those of the inner body.
pub struct RpcMetricsBody<B> {
    inner: Pin<Box<B>>,
    pending: Pending,
    /// The code if the body ends without a `grpc-status`.
    no_status: &'static str,
}

impl<B> std::fmt::Debug for RpcMetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetricsBody")
            .field("labels", &self.pending.labels)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for RpcMetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if !this.pending.is_recorded() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        this.pending
                            .finish(grpc_status(trailers).unwrap_or(this.no_status));
                    } else if this.inner.is_end_stream() {
                        // The last frame, and no trailers: hyper will not poll again.
                        this.pending.finish(this.no_status);
                    }
                }
                Some(Err(_)) => this.pending.finish("INTERNAL"),
                None => this.pending.finish(this.no_status),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The code of a `grpc-status` header, if there is one (`UNKNOWN` if it is not a number).
fn grpc_status(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .map_or("UNKNOWN", grpc_code_name),
    )
}

/// The code a gRPC client infers for a response that ends without a `grpc-status`
/// (<https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md>; `UNKNOWN`
/// for HTTP 200, as tonic and grpc-go do).
fn code_without_grpc_status(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INTERNAL",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "UNIMPLEMENTED",
        429 | 502 | 503 | 504 => "UNAVAILABLE",
        _ => "UNKNOWN",
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
