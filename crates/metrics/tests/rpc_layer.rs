//! `RpcMetricsLayer` driven with scripted tower services and response bodies, and once
//! through a real tonic server on loopback.
//!
//! The registry is process-wide and the tests run in parallel: every test uses its own
//! method names, and reads only its own lines of the exposition.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use ovation_metrics::{RpcMetricsLayer, global};
use tower::{Layer, Service, ServiceExt};

const SERVICE: &str = "ovation.test.v1.LayerTest";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct BodyFailed;

impl std::fmt::Display for BodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body failed")
    }
}

impl std::error::Error for BodyFailed {}

/// A response body that yields its frames one per poll.
struct ScriptBody {
    frames: VecDeque<Result<Frame<&'static [u8]>, BodyFailed>>,
    /// Whether `is_end_stream` tells when the frames are exhausted (as tonic's bodies do);
    /// if not, the end is only seen by `poll_frame` returning `None`.
    knows_its_end: bool,
}

impl ScriptBody {
    fn new(frames: Vec<Result<Frame<&'static [u8]>, BodyFailed>>) -> Self {
        ScriptBody {
            frames: frames.into(),
            knows_its_end: true,
        }
    }

    fn empty() -> Self {
        ScriptBody::new(Vec::new())
    }
}

impl Body for ScriptBody {
    type Data = &'static [u8];
    type Error = BodyFailed;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.frames.pop_front())
    }

    fn is_end_stream(&self) -> bool {
        self.knows_its_end && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let bytes: usize = self
            .frames
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len()))
            .sum();
        SizeHint::with_exact(bytes as u64)
    }
}

fn data(bytes: &'static [u8]) -> Result<Frame<&'static [u8]>, BodyFailed> {
    Ok(Frame::data(bytes))
}

fn trailers(grpc_status: &'static str) -> Result<Frame<&'static [u8]>, BodyFailed> {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", http::HeaderValue::from_static(grpc_status));
    Ok(Frame::trailers(map))
}

/// A response head with gRPC's content type, and `grpc-status` if given (trailers-only).
fn grpc_response(
    grpc_status: Option<&'static str>,
    body: ScriptBody,
) -> http::Response<ScriptBody> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    if let Some(code) = grpc_status {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(code));
    }
    response
}

fn request(service: &str, method: &str) -> http::Request<()> {
    http::Request::builder()
        .uri(format!("http://localhost/{service}/{method}"))
        .body(())
        .unwrap()
}

/// Calls a service answering `make()`, behind the layer.
async fn call(
    method: &str,
    make: impl FnOnce() -> http::Response<ScriptBody> + Send + 'static,
) -> http::Response<impl Body<Data = &'static [u8], Error = BodyFailed> + Unpin> {
    let mut make = Some(make);
    let inner = tower::service_fn(move |_request: http::Request<()>| {
        let response = make.take().expect("called once")();
        async move { Ok::<_, Infallible>(response) }
    });
    RpcMetricsLayer::new(&[SERVICE])
        .layer(inner)
        .oneshot(request(SERVICE, method))
        .await
        .unwrap()
}

async fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// The exposition's `ovation_rpc_requests_total` of `service`/`method`: (code, count).
fn requests_of(service: &str, method: &str) -> Vec<(String, u64)> {
    let text = global().encode();
    let prefix =
        format!("ovation_rpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"");
    let mut found: Vec<(String, u64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (code, count) = rest.split_once("\"} ")?;
            Some((code.to_owned(), count.parse().ok()?))
        })
        .collect();
    found.sort();
    found
}

fn requests(method: &str) -> Vec<(String, u64)> {
    requests_of(SERVICE, method)
}

fn counted(code: &str, count: u64) -> Vec<(String, u64)> {
    vec![(code.to_owned(), count)]
}

/// `ovation_rpc_duration_seconds` of `method`: (count, sum); (0, 0.0) if never observed.
fn duration_of(service: &str, method: &str) -> (u64, f64) {
    let text = global().encode();
    let labels = format!("{{service=\"{service}\",method=\"{method}\"}} ");
    let value = |metric: &str| -> Option<String> {
        let prefix = format!("{metric}{labels}");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    };
    let count = value("ovation_rpc_duration_seconds_count").map_or(0, |v| v.parse().unwrap());
    let sum = value("ovation_rpc_duration_seconds_sum").map_or(0.0, |v| v.parse().unwrap());
    (count, sum)
}

fn duration(method: &str) -> (u64, f64) {
    duration_of(SERVICE, method)
}

#[tokio::test]
async fn trailers_only_error_is_recorded_at_the_head() {
    let method = "TrailersOnlyNotFound";
    let response = call(method, || grpc_response(Some("5"), ScriptBody::empty())).await;
    assert_eq!(requests(method), counted("NOT_FOUND", 1));
    assert_eq!(duration(method).0, 1);
    // Dropping the (ended) body records nothing more.
    drop(response);
    assert_eq!(requests(method), counted("NOT_FOUND", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn trailers_only_head_with_a_pending_body_is_not_cancelled_on_drop() {
    let method = "TrailersOnlyBodyNotRead";
    let response = call(method, || {
        let mut body = ScriptBody::new(vec![data(b"x")]);
        body.knows_its_end = false;
        grpc_response(Some("7"), body)
    })
    .await;
    assert_eq!(requests(method), counted("PERMISSION_DENIED", 1));
    drop(response);
    assert_eq!(requests(method), counted("PERMISSION_DENIED", 1));
}

#[tokio::test]
async fn ok_in_trailers_is_recorded_when_the_trailers_arrive() {
    let method = "UnaryOk";
    let mut response = call(method, || {
        grpc_response(None, ScriptBody::new(vec![data(b"hello"), trailers("0")]))
    })
    .await;
    let body = response.body_mut();
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(5));
    assert_eq!(
        requests(method),
        vec![],
        "nothing before the end of the body"
    );
    assert_eq!(duration(method).0, 0);

    let frame = next_frame(body).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), b"hello");
    assert_eq!(requests(method), vec![], "nothing after data");
    assert_eq!(body.size_hint().exact(), Some(0));

    tokio::time::sleep(Duration::from_millis(40)).await;
    let frame = next_frame(body).await.unwrap().unwrap();
    assert!(frame.is_trailers());
    assert!(body.is_end_stream());
    assert_eq!(requests(method), counted("OK", 1));
    let (count, sum) = duration(method);
    assert_eq!(count, 1);
    assert!(sum >= 0.04, "the duration ends with the trailers: {sum}");

    assert!(next_frame(body).await.is_none());
    drop(response);
    assert_eq!(requests(method), counted("OK", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn stream_failing_in_trailers_gets_the_trailers_code() {
    let method = "StreamResourceExhausted";
    let mut response = call(method, || {
        grpc_response(
            None,
            ScriptBody::new(vec![data(b"gift 1"), data(b"gift 2"), trailers("8")]),
        )
    })
    .await;
    let body = response.body_mut();
    while let Some(frame) = next_frame(body).await {
        frame.unwrap();
    }
    drop(response);
    assert_eq!(requests(method), counted("RESOURCE_EXHAUSTED", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn body_dropped_mid_stream_is_cancelled() {
    let method = "StreamDroppedByClient";
    let mut response = call(method, || {
        grpc_response(
            None,
            ScriptBody::new(vec![data(b"gift 1"), data(b"gift 2"), trailers("0")]),
        )
    })
    .await;
    next_frame(response.body_mut()).await.unwrap().unwrap();
    assert_eq!(requests(method), vec![]);
    drop(response);
    assert_eq!(requests(method), counted("CANCELLED", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn body_error_is_internal() {
    let method = "StreamBodyError";
    let mut response = call(method, || {
        grpc_response(
            None,
            ScriptBody::new(vec![data(b"gift 1"), Err(BodyFailed)]),
        )
    })
    .await;
    let body = response.body_mut();
    next_frame(body).await.unwrap().unwrap();
    assert!(next_frame(body).await.unwrap().is_err());
    drop(response);
    assert_eq!(requests(method), counted("INTERNAL", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn body_ending_without_grpc_status_is_unknown() {
    // Ends seen through `is_end_stream` after the last data frame (hyper polls no more).
    let method = "NoTrailersEndStream";
    let mut response = call(method, || {
        grpc_response(None, ScriptBody::new(vec![data(b"x")]))
    })
    .await;
    next_frame(response.body_mut()).await.unwrap().unwrap();
    assert_eq!(requests(method), counted("UNKNOWN", 1));
    drop(response);
    assert_eq!(requests(method), counted("UNKNOWN", 1));

    // Ends seen through `poll_frame` returning `None`.
    let method = "NoTrailersPollNone";
    let mut response = call(method, || {
        let mut body = ScriptBody::new(vec![data(b"x")]);
        body.knows_its_end = false;
        grpc_response(None, body)
    })
    .await;
    next_frame(response.body_mut()).await.unwrap().unwrap();
    assert_eq!(requests(method), vec![]);
    assert!(next_frame(response.body_mut()).await.is_none());
    assert_eq!(requests(method), counted("UNKNOWN", 1));
    drop(response);
    assert_eq!(requests(method), counted("UNKNOWN", 1));

    // Trailers without grpc-status.
    let method = "TrailersWithoutStatus";
    let mut response = call(method, || {
        grpc_response(
            None,
            ScriptBody::new(vec![Ok(Frame::trailers(http::HeaderMap::new()))]),
        )
    })
    .await;
    next_frame(response.body_mut()).await.unwrap().unwrap();
    assert_eq!(requests(method), counted("UNKNOWN", 1));

    // An empty body that is over at once: recorded with the head, from the HTTP status.
    let method = "Http503NoStatus";
    let response = call(method, || {
        let mut response = grpc_response(None, ScriptBody::empty());
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await;
    assert_eq!(requests(method), counted("UNAVAILABLE", 1));
    drop(response);
    assert_eq!(requests(method), counted("UNAVAILABLE", 1));
}

#[tokio::test]
async fn response_future_dropped_before_the_head_is_cancelled() {
    let method = "DroppedBeforeHead";
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        std::future::pending::<Result<http::Response<ScriptBody>, Infallible>>().await
    });
    let mut service = RpcMetricsLayer::new(&[SERVICE]).layer(inner);
    let future = service
        .ready()
        .await
        .unwrap()
        .call(request(SERVICE, method));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), future)
            .await
            .is_err()
    );
    assert_eq!(requests(method), counted("CANCELLED", 1));
    assert_eq!(duration(method).0, 1);
}

#[tokio::test]
async fn load_shed_is_resource_exhausted() {
    let method = "Shed";
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Err::<http::Response<ScriptBody>, BoxError>(Box::new(
            tower::load_shed::error::Overloaded::new(),
        ))
    });
    let result = RpcMetricsLayer::new(&[SERVICE])
        .layer(inner)
        .oneshot(request(SERVICE, method))
        .await;
    assert!(result.is_err());
    assert_eq!(requests(method), counted("RESOURCE_EXHAUSTED", 1));
    assert_eq!(duration(method).0, 1);
}

/// The only test that counts into method `unknown`.
#[tokio::test]
async fn unknown_services_and_unimplemented_methods_are_unknown() {
    let unknown_before = requests_of("unknown", "unknown");
    let unimplemented_before = requests_of(SERVICE, "unknown");
    let of = |found: &[(String, u64)], code: &str| {
        found.iter().find(|(c, _)| c == code).map_or(0, |(_, n)| *n)
    };

    // An unknown service, its status in trailers.
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, Infallible>(grpc_response(None, ScriptBody::new(vec![trailers("0")])))
    });
    let mut response = RpcMetricsLayer::new(&[SERVICE])
        .layer(inner)
        .oneshot(request("evil.Service", "Grow"))
        .await
        .unwrap();
    next_frame(response.body_mut()).await.unwrap().unwrap();

    // A known service, a method it does not have: UNIMPLEMENTED, trailers-only.
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, Infallible>(grpc_response(Some("12"), ScriptBody::empty()))
    });
    RpcMetricsLayer::new(&[SERVICE])
        .layer(inner)
        .oneshot(request(SERVICE, "NoSuchMethod"))
        .await
        .unwrap();

    let unknown_after = requests_of("unknown", "unknown");
    assert_eq!(of(&unknown_after, "OK"), of(&unknown_before, "OK") + 1);
    // The service is known, so it keeps its label; only the method is `unknown`.
    assert_eq!(
        of(&requests_of(SERVICE, "unknown"), "UNIMPLEMENTED"),
        of(&unimplemented_before, "UNIMPLEMENTED") + 1
    );
    assert_eq!(requests_of("evil.Service", "Grow"), vec![]);
    assert_eq!(requests("NoSuchMethod"), vec![]);
}

/// The layer in a real tonic server (the health service) on loopback, over HTTP/2.
#[tokio::test]
async fn tonic_server_on_loopback() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    const HEALTH: &str = "grpc.health.v1.Health";
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "ovation.test.v1.Loopback",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RpcMetricsLayer::new(&[HEALTH]))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = |service: &str| {
        tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    };

    // Unary success: grpc-status 0 in the trailers.
    client
        .check(check("ovation.test.v1.Loopback"))
        .await
        .unwrap();
    // Handler error: trailers-only NOT_FOUND.
    let status = client.check(check("not.Registered")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // The server records after the trailers went out, the client may see them first.
    let mut check_counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        check_counts = requests_of(HEALTH, "Check");
        if check_counts.iter().map(|(_, n)| n).sum::<u64>() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        check_counts,
        vec![("NOT_FOUND".to_owned(), 1), ("OK".to_owned(), 1)]
    );
    assert_eq!(duration_of(HEALTH, "Check").0, 2);

    // A server stream the client cancels: CANCELLED once the server drops the body.
    let mut stream = client
        .watch(check("ovation.test.v1.Loopback"))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    assert_eq!(
        requests_of(HEALTH, "Watch"),
        vec![],
        "the stream is still open"
    );
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while requests_of(HEALTH, "Watch").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        requests_of(HEALTH, "Watch"),
        vec![("CANCELLED".to_owned(), 1)]
    );
    assert_eq!(duration_of(HEALTH, "Watch").0, 1);
    server.abort();
}
