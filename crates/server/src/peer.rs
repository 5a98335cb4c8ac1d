//! Calls to other Ovation services. Every outbound call carries this service's identity
//! token, the current W3C trace context, and a deadline; the channel connects lazily (a
//! peer that is down at start-up is not a start-up failure) and speaks TLS when a CA is
//! configured.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovation_auth::{Role, Signer};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::tls::{ClientTls, TlsError};

/// Lifetime of the identity tokens a service mints for itself.
const IDENTITY_TOKEN_TTL_SECS: u64 = 900;
/// A minted token is replaced when less than this much of its life is left.
const IDENTITY_TOKEN_REFRESH_SECS: u64 = 300;
/// Deadline of an outbound call whose caller set none.
pub const OUTBOUND_DEADLINE_DEFAULT: Duration = Duration::from_secs(5);

/// How one peer is reached: its URL and TLS settings.
#[derive(Clone, Debug)]
pub struct PeerAddress {
    pub url: String,
    pub tls: ClientTls,
}

/// Declares the clap flags of one peer (`--<peer>-url`, `--<peer>-tls-*`) and their
/// `OVATION_<PEER>_*` variables.
/// Each field has an explicit clap id (the flag's name): services flatten several peers
/// and the server's own TLS settings, whose field names would otherwise collide.
macro_rules! peer_args {
    ($name:ident, $doc:literal, $url:literal, $url_env:literal, $default:literal,
     $ca:literal, $ca_env:literal, $cert:literal, $cert_env:literal,
     $key:literal, $key_env:literal, $domain:literal, $domain_env:literal) => {
        #[doc = $doc]
        #[derive(clap::Args, Clone, Debug)]
        pub struct $name {
            /// URL of the service: http://host:port, or https://host:port with a CA file.
            #[arg(id = $url, long = $url, env = $url_env, default_value = $default)]
            pub url: String,
            /// PEM CA to verify the service's certificate with (turns TLS on).
            #[arg(id = $ca, long = $ca, env = $ca_env)]
            pub tls_ca_file: Option<PathBuf>,
            /// PEM client certificate to present (mTLS).
            #[arg(id = $cert, long = $cert, env = $cert_env)]
            pub tls_cert_file: Option<PathBuf>,
            /// PEM key of the client certificate.
            #[arg(id = $key, long = $key, env = $key_env)]
            pub tls_key_file: Option<PathBuf>,
            /// Name to verify the service's certificate against, if not the URL's host.
            #[arg(id = $domain, long = $domain, env = $domain_env)]
            pub tls_domain: Option<String>,
        }

        impl $name {
            pub fn address(&self) -> PeerAddress {
                PeerAddress {
                    url: self.url.clone(),
                    tls: ClientTls {
                        ca_file: self.tls_ca_file.clone(),
                        cert_file: self.tls_cert_file.clone(),
                        key_file: self.tls_key_file.clone(),
                        domain: self.tls_domain.clone(),
                    },
                }
            }

            /// Plaintext at `url`.
            pub fn plaintext(url: impl Into<String>) -> Self {
                $name {
                    url: url.into(),
                    tls_ca_file: None,
                    tls_cert_file: None,
                    tls_key_file: None,
                    tls_domain: None,
                }
            }
        }
    };
}

peer_args!(
    CatalogPeerArgs,
    "Where the catalog is.",
    "catalog-url",
    "OVATION_CATALOG_URL",
    "http://127.0.0.1:50052",
    "catalog-tls-ca-file",
    "OVATION_CATALOG_TLS_CA_FILE",
    "catalog-tls-cert-file",
    "OVATION_CATALOG_TLS_CERT_FILE",
    "catalog-tls-key-file",
    "OVATION_CATALOG_TLS_KEY_FILE",
    "catalog-tls-domain",
    "OVATION_CATALOG_TLS_DOMAIN"
);
peer_args!(
    WalletPeerArgs,
    "Where the wallet is.",
    "wallet-url",
    "OVATION_WALLET_URL",
    "http://127.0.0.1:50051",
    "wallet-tls-ca-file",
    "OVATION_WALLET_TLS_CA_FILE",
    "wallet-tls-cert-file",
    "OVATION_WALLET_TLS_CERT_FILE",
    "wallet-tls-key-file",
    "OVATION_WALLET_TLS_KEY_FILE",
    "wallet-tls-domain",
    "OVATION_WALLET_TLS_DOMAIN"
);
peer_args!(
    PayoutPeerArgs,
    "Where the payout service is.",
    "payout-url",
    "OVATION_PAYOUT_URL",
    "http://127.0.0.1:50054",
    "payout-tls-ca-file",
    "OVATION_PAYOUT_TLS_CA_FILE",
    "payout-tls-cert-file",
    "OVATION_PAYOUT_TLS_CERT_FILE",
    "payout-tls-key-file",
    "OVATION_PAYOUT_TLS_KEY_FILE",
    "payout-tls-domain",
    "OVATION_PAYOUT_TLS_DOMAIN"
);

/// How this service proves who it is to its peers.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IdentityArgs {
    /// Keys file whose first hs256 key this service signs its own short-lived identity
    /// tokens with (the peers must trust that key).
    #[arg(long, env = "OVATION_SERVICE_KEYS_FILE")]
    pub service_keys_file: Option<PathBuf>,
    /// A token to present as-is instead (re-read on refresh, e.g. one a sidecar rotates).
    #[arg(long, env = "OVATION_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(
        "this service calls other services and needs an identity: set \
         OVATION_SERVICE_KEYS_FILE or OVATION_SERVICE_TOKEN_FILE"
    )]
    NoIdentity,
    #[error(transparent)]
    Keys(#[from] ovation_auth::AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

enum TokenSource {
    Mint {
        signer: Signer,
        subject: String,
        role: Role,
    },
    File(PathBuf),
}

/// This service's identity token, minted or read, refreshed before it expires.
pub struct ServiceIdentity {
    source: TokenSource,
    cached: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceIdentity").finish_non_exhaustive()
    }
}

impl ServiceIdentity {
    /// The identity of service `subject` (e.g. "wallet") with `role`, minted (with the
    /// key of the service keys file granted `role`) for the audience of `auth`.
    pub fn new(
        args: &IdentityArgs,
        auth: &crate::access::AuthArgs,
        subject: &str,
        role: Role,
    ) -> Result<Self, PeerError> {
        let source = match (&args.service_keys_file, &args.service_token_file) {
            (_, Some(path)) => TokenSource::File(path.clone()),
            (Some(keys), None) => TokenSource::Mint {
                signer: Signer::from_keys_file(keys, &[role])?
                    .with_audience(auth.auth_audience.as_deref()),
                subject: subject.to_owned(),
                role,
            },
            (None, None) => return Err(PeerError::NoIdentity),
        };
        Ok(ServiceIdentity {
            source,
            cached: Mutex::new(None),
        })
    }

    /// The token to present now.
    pub fn token(&self) -> Result<String, Status> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let (token, keep) = match &self.source {
            TokenSource::Mint {
                signer,
                subject,
                role,
            } => (
                signer.mint(subject, &[*role], IDENTITY_TOKEN_TTL_SECS),
                Duration::from_secs(IDENTITY_TOKEN_TTL_SECS - IDENTITY_TOKEN_REFRESH_SECS),
            ),
            TokenSource::File(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    Status::unauthenticated(format!(
                        "cannot read this service's token file {}: {e}",
                        path.display()
                    ))
                })?;
                (token.trim().to_owned(), Duration::from_secs(60))
            }
        };
        *cached = Some((token.clone(), Instant::now() + keep));
        Ok(token)
    }
}

/// What every outbound call carries: identity, trace context, deadline.
#[derive(Clone, Debug)]
pub struct Outbound {
    identity: Arc<ServiceIdentity>,
    deadline: Duration,
}

impl Outbound {
    pub fn new(identity: Arc<ServiceIdentity>) -> Self {
        Outbound {
            identity,
            deadline: OUTBOUND_DEADLINE_DEFAULT,
        }
    }
}

impl Interceptor for Outbound {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        ovation_telemetry::inject_trace_context(request.metadata_mut());
        let bearer = format!("Bearer {}", self.identity.token()?);
        let value = bearer
            .parse()
            .map_err(|_| Status::internal("identity token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        // Every outbound call has a deadline; a caller's shorter one stands.
        if request.metadata().get("grpc-timeout").is_none() {
            request.set_timeout(self.deadline);
        }
        Ok(request)
    }
}

/// How often a peer's DNS name is resolved again for client-side balancing.
pub const PEER_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Most addresses of one peer name balanced over.
const PEER_ADDRESSES_MAX: usize = 64;

/// A channel to a peer that connects lazily (a peer down at start-up is retried per call).
///
/// HTTP/2 keeps one connection per channel, so behind one address all calls would go to
/// one pod. When the URL's host is a DNS name (a Kubernetes headless Service), the name is
/// resolved every 5 s and calls are balanced over every address it returns; TLS still
/// verifies the certificate against the name. An IP literal or `localhost` is one endpoint.
pub fn channel(address: &PeerAddress) -> Result<Channel, PeerError> {
    let endpoint =
        crate::tls::endpoint(&address.url, &address.tls)?.timeout(Duration::from_secs(30));
    let uri = endpoint.uri().clone();
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16().or_else(|| default_port(&uri)))
    else {
        return Ok(endpoint.connect_lazy());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        return Ok(endpoint.connect_lazy());
    }
    Ok(balanced_channel(
        address,
        host,
        port,
        |host: String, port: u16| async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|a| a.collect::<Vec<_>>())
        },
    ))
}

/// A channel balanced over whatever `resolve(host, port)` returns, re-resolved every 5 s.
pub fn balanced_channel<R, F>(address: &PeerAddress, host: String, port: u16, resolve: R) -> Channel
where
    R: Fn(String, u16) -> F + Send + 'static,
    F: std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send + 'static,
{
    let (channel, changes) = Channel::balance_channel::<std::net::SocketAddr>(PEER_ADDRESSES_MAX);
    tokio::spawn(resolve_forever(
        address.clone(),
        host,
        port,
        changes,
        resolve,
    ));
    channel
}

fn default_port(uri: &http::Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

/// Keeps the balanced channel's endpoints equal to what `host` resolves to, until every
/// clone of the channel is gone.
async fn resolve_forever<R, F>(
    address: PeerAddress,
    host: String,
    port: u16,
    changes: tokio::sync::mpsc::Sender<
        tonic::transport::channel::Change<std::net::SocketAddr, tonic::transport::Endpoint>,
    >,
    resolve: R,
) where
    R: Fn(String, u16) -> F + Send + 'static,
    F: std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send + 'static,
{
    use tonic::transport::channel::Change;
    let scheme = if address.url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let mut current = std::collections::BTreeSet::new();
    loop {
        match resolve(host.clone(), port).await {
            Ok(found) => {
                let found: std::collections::BTreeSet<_> =
                    found.into_iter().take(PEER_ADDRESSES_MAX).collect();
                for gone in current.difference(&found) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&current) {
                    // Connect by address, verify TLS against the name.
                    let mut tls = address.tls.clone();
                    if tls.ca_file.is_some() && tls.domain.is_none() {
                        tls.domain = Some(host.clone());
                    }
                    let uri = format!("{scheme}://{new}");
                    match crate::tls::endpoint(&uri, &tls) {
                        Ok(endpoint) => {
                            let endpoint = endpoint.timeout(Duration::from_secs(30));
                            if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(peer = %host, address = %new, error = %e, "peer address skipped")
                        }
                    }
                }
                current = found;
            }
            // Keep the addresses we have: a DNS hiccup must not empty the pool.
            Err(e) => {
                tracing::warn!(peer = %host, error = %e, "resolving peer failed; keeping its last addresses")
            }
        }
        tokio::select! {
            _ = changes.closed() => return,
            _ = tokio::time::sleep(PEER_RESOLVE_INTERVAL) => {}
        }
    }
}
