//! The shared server's limits, over real gRPC on loopback: a saturated service sheds load
//! with RESOURCE_EXHAUSTED at once, and a call that overruns the request timeout is cut off.

use std::convert::Infallible;
use std::time::Duration;

use http::uri::PathAndQuery;
use ovation_server::{ServiceSpec, Shutdown, serve};
use ovation_store::Db;
use ovation_testkit::{Bearer, Running, TestDatabase, code, server_config};
use tonic::Code;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

/// A gRPC service whose one method takes `delay` to answer.
#[derive(Clone)]
struct Slow {
    delay: Duration,
}

impl NamedService for Slow {
    const NAME: &'static str = "test.Slow";
}

impl tower::Service<http::Request<tonic::body::Body>> for Slow {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(tonic::Status::unimplemented("slow by design").into_http())
        })
    }
}

async fn start_slow(
    db: &TestDatabase,
    delay: Duration,
    tune: impl FnOnce(&mut ovation_server::ServerConfig),
) -> Running {
    let mut config = server_config(db.url());
    tune(&mut config);
    let url = db.url().to_owned();
    Running::start(move |listener, shutdown: Shutdown| async move {
        let db = Db::connect(&url, &config.args.db_options()).await?;
        db.migrate(&sqlx::migrate::Migrator::DEFAULT).await?;
        let spec = ServiceSpec {
            name: "slow",
            grpc_service: "test.Slow",
        };
        serve(
            spec,
            Routes::new(Slow { delay }),
            db,
            &config,
            listener,
            shutdown,
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap()
}

async fn call(running: &Running) -> Code {
    let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
        running.channel().await,
        Bearer::admin(),
    ));
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::from_static("/test.Slow/Call");
    code(grpc.unary(tonic::Request::new(()), path, codec).await)
}

#[tokio::test]
async fn a_saturated_service_sheds_load_with_resource_exhausted() {
    let db = TestDatabase::sqlite();
    let running = start_slow(&db, Duration::from_millis(800), |c| {
        c.args.concurrency_max = 2
    })
    .await;
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let channel = running.channel();
            async move {
                let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
                    channel.await,
                    Bearer::admin(),
                ));
                grpc.ready().await.unwrap();
                grpc.unary(
                    tonic::Request::new(()),
                    PathAndQuery::from_static("/test.Slow/Call"),
                    tonic_prost::ProstCodec::<(), ()>::default(),
                )
                .await
                .map(|_| ())
                .map_err(|s| s.code())
            }
        })
        .collect();
    let codes: Vec<Code> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.err().unwrap_or(Code::Ok))
        .collect();
    let shed = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let served = codes.iter().filter(|c| **c == Code::Unimplemented).count();
    assert!(shed >= 1, "nothing was shed: {codes:?}");
    assert!(
        served >= 2,
        "the calls within the limit were not served: {codes:?}"
    );
    assert_eq!(shed + served, codes.len(), "unexpected codes: {codes:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_that_overruns_the_request_timeout_is_cut_off() {
    let db = TestDatabase::sqlite();
    let running = start_slow(&db, Duration::from_secs(5), |c| {
        c.args.request_timeout_ms = 100
    })
    .await;
    let code = call(&running).await;
    // tonic reports its own server-side timeout as CANCELLED.
    assert_eq!(code, Code::Cancelled);
    running.stop().await.unwrap();
}

/// Liveness answers SERVING while the process runs, whatever its database does; readiness
/// ("") follows the database.
#[tokio::test]
async fn liveness_has_its_own_health_name() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let db = TestDatabase::sqlite();
    let running = start_slow(&db, Duration::from_millis(1), |_| {}).await;
    let mut health = HealthClient::new(running.channel().await);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let live = health
        .check(status(ovation_server::serve::LIVENESS_HEALTH_SERVICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.status, 1, "SERVING");
    running.stop().await.unwrap();
}
