//! TLS and mTLS over real gRPC on loopback, with certificates generated here (rcgen): a
//! CA, a server certificate for `localhost` and 127.0.0.1, a client certificate, and an
//! unrelated CA with a client certificate of its own. Servers start through
//! `ovation_server::serve`; clients are built with `ovation_server::tls::endpoint`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ovation_server::tls::{ClientTls, ServerTlsArgs, endpoint, server_tls_config};
use ovation_server::{ServiceSpec, Shutdown, StartError, serve};
use ovation_store::Db;
use ovation_testkit::{TestDatabase, server_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Bound on every connection attempt and call, so a test that should fail never hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory that exists for one test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ovation-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PEM files of a test's public key infrastructure.
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate and its key, signed by `issuer`.
fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn generate() -> Pki {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = TempDir::new();
        let (ca, issuer) = new_ca("Ovation test CA");
        let (server_cert, server_key) = new_leaf(&issuer, &["localhost", "127.0.0.1"], ServerAuth);
        let (client_cert, client_key) = new_leaf(&issuer, &["wallet"], ClientAuth);
        let (other_ca, other_issuer) = new_ca("Unrelated CA");
        let (other_client_cert, other_client_key) =
            new_leaf(&other_issuer, &["wallet"], ClientAuth);
        Pki {
            ca: dir.write("ca.pem", &ca),
            server_cert: dir.write("server.pem", &server_cert),
            server_key: dir.write("server.key", &server_key),
            client_cert: dir.write("client.pem", &client_cert),
            client_key: dir.write("client.key", &client_key),
            other_ca: dir.write("other-ca.pem", &other_ca),
            other_client_cert: dir.write("other-client.pem", &other_client_cert),
            other_client_key: dir.write("other-client.key", &other_client_key),
            dir,
        }
    }

    fn server_args(&self, mtls: bool) -> ServerTlsArgs {
        ServerTlsArgs {
            tls_cert_file: Some(self.server_cert.clone()),
            tls_key_file: Some(self.server_key.clone()),
            tls_client_ca_file: mtls.then(|| self.ca.clone()),
        }
    }

    /// A client trusting `ca`, presenting `identity` if any.
    fn client(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> ClientTls {
        ClientTls {
            ca_file: Some(ca.to_owned()),
            cert_file: identity.map(|(cert, _)| cert.to_owned()),
            key_file: identity.map(|(_, key)| key.to_owned()),
            domain: None,
        }
    }
}

/// A server started through `serve()` with TLS. Not `ovation_testkit::Running`: its
/// readiness probe speaks plaintext, which a TLS server refuses.
struct TlsServer {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), StartError>>,
}

impl TlsServer {
    /// Starts `serve()` with `tls` on a loopback port, without waiting for it.
    async fn spawn(db: &TestDatabase, tls: ServerTlsArgs) -> TlsServer {
        TlsServer::spawn_with_probe(db, tls, None).await
    }

    /// As [`TlsServer::spawn`], with the plaintext health probe port on `probe_addr`.
    async fn spawn_with_probe(
        db: &TestDatabase,
        tls: ServerTlsArgs,
        probe_addr: Option<SocketAddr>,
    ) -> TlsServer {
        let mut config = server_config(db.url());
        config.args.tls = tls;
        config.args.probe_addr = probe_addr;
        let url = db.url().to_owned();
        let listener = ovation_server::bind(config.listen_addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let db = Db::connect(&url, &config.args.db_options()).await?;
            db.migrate(&sqlx::migrate::Migrator::DEFAULT).await?;
            let spec = ServiceSpec {
                name: "tls",
                grpc_service: "test.Tls",
            };
            serve(spec, Routes::default(), db, &config, listener, stop).await?;
            Ok(())
        });
        TlsServer {
            addr,
            shutdown,
            task,
        }
    }

    /// Starts a TLS server and waits (bounded) until `ready` gets SERVING from it.
    async fn start(db: &TestDatabase, tls: ServerTlsArgs, ready: &ClientTls) -> TlsServer {
        TlsServer::start_with_probe(db, tls, ready, None).await
    }

    async fn start_with_probe(
        db: &TestDatabase,
        tls: ServerTlsArgs,
        ready: &ClientTls,
        probe_addr: Option<SocketAddr>,
    ) -> TlsServer {
        let mut server = TlsServer::spawn_with_probe(db, tls, probe_addr).await;
        let uri = server.https();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let last = match health(&uri, ready).await {
                Ok(true) => return server,
                Ok(false) => "not SERVING".to_owned(),
                Err(e) => e,
            };
            if server.task.is_finished() {
                match (&mut server.task).await {
                    Ok(result) => panic!("server stopped before serving: {result:?}"),
                    Err(join) => panic!("server task failed: {join}"),
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "TLS server never reported SERVING; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// Connects to `uri` with `tls` and asks grpc.health.v1 for the server's status: `Ok(true)`
/// for SERVING, `Err` (with the whole error chain) when the connection or call fails.
async fn health(uri: &str, tls: &ClientTls) -> Result<bool, String> {
    health_of(uri, tls, "").await
}

/// As [`health`], for the health service name `service`.
async fn health_of(uri: &str, tls: &ClientTls, service: &str) -> Result<bool, String> {
    let endpoint = endpoint(uri, tls).map_err(|e| e.to_string())?;
    let call = async {
        let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| format!("{status:?}"))?;
        Ok(reply.get_ref().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}

/// Asserts `result` is a failure (not SERVING, not a hang), and returns its message.
fn refused(result: Result<bool, String>, who: &str) -> String {
    match result {
        Err(e) => {
            eprintln!("{who}: refused as expected: {e}");
            e
        }
        Ok(serving) => panic!("{who} was not refused (SERVING: {serving})"),
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_only_them() {
    let pki = Pki::generate();
    let db = TestDatabase::sqlite();
    let trusting = pki.client(&pki.ca, None);
    let server = TlsServer::start(&db, pki.server_args(false), &trusting).await;

    // The server certificate names 127.0.0.1 and localhost: both verify.
    assert_eq!(health(&server.https(), &trusting).await, Ok(true));
    let by_name = ClientTls {
        domain: Some("localhost".into()),
        ..trusting.clone()
    };
    assert_eq!(health(&server.https(), &by_name).await, Ok(true));
    // TLS without mTLS does not mind a client certificate.
    let with_cert = pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    assert_eq!(health(&server.https(), &with_cert).await, Ok(true));

    let plaintext = format!("http://{}", server.addr);
    refused(
        health(&plaintext, &ClientTls::default()).await,
        "plaintext client",
    );
    let error = refused(
        health(&server.https(), &pki.client(&pki.other_ca, None)).await,
        "client trusting an unrelated CA",
    );
    assert!(
        error.contains("certificate"),
        "expected a certificate verification failure, got: {error}"
    );
    let wrong_name = ClientTls {
        domain: Some("wallet.internal".into()),
        ..trusting
    };
    refused(
        health(&server.https(), &wrong_name).await,
        "client expecting another server name",
    );

    server.stop().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let pki = Pki::generate();
    let db = TestDatabase::sqlite();
    let signed = pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let server = TlsServer::start(&db, pki.server_args(true), &signed).await;

    assert_eq!(health(&server.https(), &signed).await, Ok(true));

    // Refused by the server in the handshake, with the TLS alert saying why (under TLS 1.3
    // the client only learns it on its first request).
    let error = refused(
        health(&server.https(), &pki.client(&pki.ca, None)).await,
        "client without a certificate",
    );
    assert!(error.contains("CertificateRequired"), "{error}");
    let error = refused(
        health(
            &server.https(),
            &pki.client(
                &pki.ca,
                Some((&pki.other_client_cert, &pki.other_client_key)),
            ),
        )
        .await,
        "client with a certificate from an unrelated CA",
    );
    assert!(error.contains("UnknownCA"), "{error}");
    refused(
        health(&format!("http://{}", server.addr), &ClientTls::default()).await,
        "plaintext client",
    );

    // Refused clients leave the server as it was.
    assert_eq!(health(&server.https(), &signed).await, Ok(true));
    server.stop().await;
}

/// Kubernetes' gRPC probes speak plaintext only: under mTLS the probe port answers health
/// in plaintext without a token, and serves nothing else.
#[tokio::test]
async fn the_probe_port_answers_health_in_plaintext_under_mtls_and_nothing_else() {
    let pki = Pki::generate();
    let db = TestDatabase::sqlite();
    let signed = pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let probe_addr = ovation_testkit::free_addr();
    let server =
        TlsServer::start_with_probe(&db, pki.server_args(true), &signed, Some(probe_addr)).await;
    let probe = format!("http://{probe_addr}");

    assert_eq!(health(&probe, &ClientTls::default()).await, Ok(true));
    assert_eq!(
        health_of(&probe, &ClientTls::default(), "test.Tls").await,
        Ok(true)
    );
    assert_eq!(
        health_of(&probe, &ClientTls::default(), "ovation.liveness").await,
        Ok(true)
    );
    // Only health: reflection (served on the main port) is not there.
    let channel = tonic::transport::Endpoint::from_shared(probe.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect_err("the probe port must serve health only");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    // The main port still refuses plaintext.
    assert!(
        health(&format!("http://{}", server.addr), &ClientTls::default())
            .await
            .is_err()
    );

    server.stop().await;
    // Stopped with the server: nothing listens on the probe port any more.
    assert!(
        tokio::net::TcpStream::connect(probe_addr).await.is_err(),
        "the probe port outlived the server"
    );
}

#[test]
fn server_settings_that_cannot_work_are_refused_naming_the_flag() {
    let pki = Pki::generate();
    let cases = [
        (
            ServerTlsArgs {
                tls_cert_file: Some(pki.server_cert.clone()),
                ..ServerTlsArgs::default()
            },
            "--tls-key-file",
        ),
        (
            ServerTlsArgs {
                tls_key_file: Some(pki.server_key.clone()),
                ..ServerTlsArgs::default()
            },
            "--tls-cert-file",
        ),
        (
            ServerTlsArgs {
                tls_client_ca_file: Some(pki.ca.clone()),
                ..ServerTlsArgs::default()
            },
            "--tls-client-ca-file",
        ),
    ];
    for (args, flag) in cases {
        let error = server_tls_config(&args).unwrap_err().to_string();
        assert!(error.contains(flag), "{error:?} does not name {flag}");
    }
    assert!(
        server_tls_config(&ServerTlsArgs::default())
            .unwrap()
            .is_none(),
        "no certificate must mean plaintext"
    );
    assert!(server_tls_config(&pki.server_args(true)).unwrap().is_some());
}

#[test]
fn bad_files_are_refused_naming_the_file_and_never_showing_the_key() {
    let pki = Pki::generate();
    let key_pem = std::fs::read_to_string(&pki.server_key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap().to_owned();
    let missing = pki.dir.0.join("no-such-cert.pem");
    let empty = pki.dir.write("empty.pem", "");

    let cases = [
        // A file that does not exist.
        (
            ServerTlsArgs {
                tls_cert_file: Some(missing.clone()),
                ..pki.server_args(false)
            },
            missing.clone(),
        ),
        // The key where the certificate belongs: its contents must not leak.
        (
            ServerTlsArgs {
                tls_cert_file: Some(pki.server_key.clone()),
                ..pki.server_args(false)
            },
            pki.server_key.clone(),
        ),
        // A certificate where the key belongs.
        (
            ServerTlsArgs {
                tls_key_file: Some(pki.server_cert.clone()),
                ..pki.server_args(false)
            },
            pki.server_cert.clone(),
        ),
        // An empty client CA.
        (
            ServerTlsArgs {
                tls_client_ca_file: Some(empty.clone()),
                ..pki.server_args(true)
            },
            empty.clone(),
        ),
        // A key that does not match the certificate.
        (
            ServerTlsArgs {
                tls_key_file: Some(pki.client_key.clone()),
                ..pki.server_args(false)
            },
            pki.client_key.clone(),
        ),
    ];
    for (args, file) in cases {
        let error = server_tls_config(&args).unwrap_err().to_string();
        eprintln!("{error}");
        let file = file.display().to_string();
        assert!(error.contains(&file), "{error:?} does not name {file}");
        assert!(!error.contains(&key_body), "{error:?} shows key material");
    }
}

#[tokio::test]
async fn a_server_with_a_bad_tls_configuration_does_not_start() {
    let pki = Pki::generate();
    let db = TestDatabase::sqlite();
    let tls = ServerTlsArgs {
        tls_key_file: None,
        ..pki.server_args(false)
    };
    let server = TlsServer::spawn(&db, tls).await;
    let result = tokio::time::timeout(CALL_TIMEOUT, server.task)
        .await
        .expect("serve() returns at once")
        .unwrap();
    let error = result.unwrap_err().to_string();
    assert!(error.contains("--tls-key-file"), "{error:?}");
}

#[test]
fn client_settings_that_cannot_work_are_refused() {
    let pki = Pki::generate();
    let https = "https://127.0.0.1:1";
    let http = "http://127.0.0.1:1";

    // Plaintext and TLS endpoints that make sense.
    assert!(endpoint(http, &ClientTls::default()).is_ok());
    assert!(endpoint(https, &pki.client(&pki.ca, None)).is_ok());
    assert!(
        endpoint(
            https,
            &pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key)))
        )
        .is_ok()
    );

    let cases: [(&str, ClientTls, &str); 5] = [
        // https with nothing to verify the server against.
        (https, ClientTls::default(), "ca_file"),
        // A CA on an http:// URI would silently be ignored by tonic.
        (http, pki.client(&pki.ca, None), "https"),
        // Half an identity.
        (
            https,
            ClientTls {
                cert_file: Some(pki.client_cert.clone()),
                ..pki.client(&pki.ca, None)
            },
            "key_file",
        ),
        // A missing CA file is named.
        (
            https,
            pki.client(&pki.dir.0.join("missing-ca.pem"), None),
            "missing-ca.pem",
        ),
        // Not a URI.
        ("not a uri", ClientTls::default(), "not a uri"),
    ];
    for (uri, tls, expected) in cases {
        let error = endpoint(uri, &tls).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{error:?} does not mention {expected}"
        );
    }
}
