//! TLS for servers and for the channels services open to each other (rustls via tonic's
//! `tls-ring`). Plaintext stays the default for local runs.
//!
//! - Server: [`ServerTlsArgs`] (`--tls-cert-file`, `--tls-key-file`, `--tls-client-ca-file`)
//!   becomes a [`ServerTlsConfig`] through [`server_tls_config`]. With a certificate and key
//!   the server speaks TLS only; adding a client CA makes it require, on every connection, a
//!   client certificate signed by that CA (mTLS) — a client without one is refused during
//!   the handshake, before any RPC.
//! - Client: [`ClientTls`] and [`endpoint`] build the channel one service opens to another:
//!   `https://` verifies the server against a configured CA (never the system roots: peers
//!   are internal) and may present a client certificate for mTLS; `http://` is plaintext.
//!
//! Everything is read and checked when the configuration is built, so a wrong path, a file
//! that is not PEM, or a key that does not match its certificate stops start-up with an
//! error naming the file, instead of failing every handshake later. Errors carry paths and
//! reasons, never file contents: a key file's bytes are a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Longest a TLS handshake may take. A peer that opens a connection and stalls must not
/// hold it (and its slot) forever; a healthy handshake takes milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a channel waits for the TCP connection to a peer, and again for the TLS
/// handshake: tonic's connect timeout covers only TCP, so the handshake gets its own bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 ping interval on channels, so a peer that vanished without closing (a killed
/// pod, a dropped NAT entry) is noticed in bounded time rather than at the next call.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Server TLS settings, as flags and environment variables. All unset: plaintext.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerTlsArgs {
    /// PEM certificate chain the server presents, leaf first. With `--tls-key-file`, the
    /// server speaks TLS only.
    #[arg(long, env = "OVATION_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted) of `--tls-cert-file`.
    #[arg(long, env = "OVATION_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s). When set, every client must present a certificate signed by
    /// one of them (mTLS); needs `--tls-cert-file` and `--tls-key-file`.
    #[arg(long, env = "OVATION_TLS_CLIENT_CA_FILE", value_name = "PATH")]
    pub tls_client_ca_file: Option<PathBuf>,
}

/// Why TLS could not be set up. Messages name the flag or file to fix and never include
/// file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Settings given in a combination that cannot work.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("{what} file {} {problem}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        problem: &'static str,
    },
    /// tonic/rustls rejected the configuration (a malformed certificate, a key that does
    /// not match its certificate, an invalid URI or domain). The reason is spelled out in
    /// the message because tonic's own message is only "transport error".
    #[error("{context}: {}", reason(.error))]
    Transport {
        context: String,
        error: tonic::transport::Error,
    },
}

/// The server's TLS configuration, or `None` for plaintext (no certificate configured).
pub fn server_tls_config(args: &ServerTlsArgs) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (cert_file, key_file) = match (&args.tls_cert_file, &args.tls_key_file) {
        (None, None) => {
            if args.tls_client_ca_file.is_some() {
                return Err(TlsError::Config(
                    "--tls-client-ca-file requires --tls-cert-file and --tls-key-file: \
                     client certificates can only be asked for over TLS"
                        .into(),
                ));
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(TlsError::Config(
                "--tls-cert-file is set but --tls-key-file is not: a TLS server needs both".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(TlsError::Config(
                "--tls-key-file is set but --tls-cert-file is not: a TLS server needs both".into(),
            ));
        }
        (Some(cert), Some(key)) => (cert, key),
    };

    let identity = read_identity(cert_file, key_file, "TLS certificate", "TLS private key")?;
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    let mut files = format!("{} and {}", cert_file.display(), key_file.display());
    if let Some(ca_file) = &args.tls_client_ca_file {
        let ca = read_pem(ca_file, "TLS client CA", Pem::Certificate)?;
        // Required, not optional: a service-to-service port that also accepts anonymous
        // clients is not protected by mTLS at all.
        config = config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false);
        files = format!("{files} (client CA {})", ca_file.display());
    }

    // tonic parses the PEM and builds the rustls config only when the server is built;
    // build it once here so a malformed file or a mismatched key is reported with the
    // files' names, at start-up, rather than as a bare "transport error".
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|error| TlsError::Transport {
            context: format!("TLS certificate, key or client CA rejected ({files})"),
            error,
        })?;
    Ok(Some(config))
}

/// TLS settings for a channel one service opens to another. Services build it from their
/// own prefixed flags (e.g. `--catalog-tls-ca-file`); everything unset means plaintext.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) the server's certificate must chain to. Required for
    /// `https://`; only this CA is trusted, not the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the server (mTLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the URI's host
    /// (e.g. connecting by IP to a certificate issued for `catalog.internal`).
    pub domain: Option<String>,
}

/// A channel endpoint to `uri` (`http://host:port` or `https://host:port`) with bounded
/// connects, TCP_NODELAY and HTTP/2 keepalive; for `https://`, TLS as configured by `tls`.
pub fn endpoint(uri: &str, tls: &ClientTls) -> Result<Endpoint, TlsError> {
    let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|error| TlsError::Transport {
        context: format!("invalid endpoint URI {uri:?}"),
        error,
    })?;
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL);
    let https = endpoint.uri().scheme_str() == Some("https");

    let Some(ca_file) = &tls.ca_file else {
        if https {
            // tonic would otherwise fall back to whatever roots are compiled in (none
            // here, so every handshake fails obscurely); peers are internal and their CA
            // must be named.
            return Err(TlsError::Config(format!(
                "{uri} is https but no CA file is set (ClientTls::ca_file, the channel's \
                 TLS CA file flag) to verify the server with"
            )));
        }
        if tls.cert_file.is_some() || tls.key_file.is_some() || tls.domain.is_some() {
            return Err(TlsError::Config(format!(
                "a client certificate, key or TLS domain is set for {uri} but no CA file \
                 (ClientTls::ca_file): they only apply over TLS, with https://"
            )));
        }
        return Ok(endpoint);
    };
    if !https {
        // tonic applies TLS only to https:// URIs and silently speaks plaintext to http://
        // ones even with a TLS config: refuse rather than downgrade.
        return Err(TlsError::Config(format!(
            "a CA file ({}) is set for {uri}, which is not https: use https:// so the \
             channel is encrypted",
            ca_file.display()
        )));
    }

    let ca = read_pem(ca_file, "TLS CA", Pem::Certificate)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .timeout(CONNECT_TIMEOUT);
    let mut files = format!("CA {}", ca_file.display());
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => {}
        (Some(cert_file), Some(key_file)) => {
            config = config.identity(read_identity(
                cert_file,
                key_file,
                "TLS client certificate",
                "TLS client private key",
            )?);
            files = format!(
                "{files}, client certificate {} and key {}",
                cert_file.display(),
                key_file.display()
            );
        }
        (Some(_), None) => {
            return Err(TlsError::Config(format!(
                "a client certificate is set for {uri} but no client key \
                 (ClientTls::key_file): mTLS needs both"
            )));
        }
        (None, Some(_)) => {
            return Err(TlsError::Config(format!(
                "a client key is set for {uri} but no client certificate \
                 (ClientTls::cert_file): mTLS needs both"
            )));
        }
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
        files = format!("{files}, domain {domain:?}");
    }
    // Builds the rustls client config now, so a bad file or domain is reported here.
    endpoint
        .tls_config(config)
        .map_err(|error| TlsError::Transport {
            context: format!("TLS settings for {uri} rejected ({files})"),
            error,
        })
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

fn read_identity(
    cert_file: &Path,
    key_file: &Path,
    cert_what: &'static str,
    key_what: &'static str,
) -> Result<Identity, TlsError> {
    let cert = read_pem(cert_file, cert_what, Pem::Certificate)?;
    let key = read_pem(key_file, key_what, Pem::PrivateKey)?;
    Ok(Identity::from_pem(cert, key))
}

/// Reads a PEM file and checks it holds at least one block of the expected kind. tonic
/// silently skips what it cannot parse, so an empty or wrong file would otherwise show up
/// only as a handshake failure (or an empty trust store) later.
fn read_pem(path: &Path, what: &'static str, kind: Pem) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let pem_error = |problem| TlsError::Pem {
        what,
        path: path.to_owned(),
        problem,
    };
    // Only the marker lines are looked at, and none of the file ends up in an error.
    let text = String::from_utf8_lossy(&bytes);
    let begins = || {
        text.lines()
            .map(str::trim)
            .filter_map(|line| line.strip_prefix("-----BEGIN "))
            .filter_map(|rest| rest.strip_suffix("-----"))
    };
    match kind {
        Pem::Certificate => {
            if !begins().any(|label| label == "CERTIFICATE") {
                return Err(pem_error(
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ));
            }
        }
        Pem::PrivateKey => {
            if begins().any(|label| label == "ENCRYPTED PRIVATE KEY") {
                return Err(pem_error(
                    "holds an encrypted private key; an unencrypted PEM key is needed",
                ));
            }
            // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys, as rustls accepts.
            if !begins()
                .any(|label| matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"))
            {
                return Err(pem_error(
                    "holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                ));
            }
        }
    }
    Ok(bytes)
}

/// The causes under a tonic transport error, whose own message is only "transport error".
fn reason(error: &tonic::transport::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let text = e.to_string();
        // Some layers repeat their cause's message in their own; say it once.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}
