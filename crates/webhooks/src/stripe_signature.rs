//! The `Stripe-Signature` scheme, as Stripe documents it for verifying webhooks by hand.
//!
//! The header is a comma-separated list of `key=value` items: one `t=<unix seconds>` and
//! one or more `v1=<hex HMAC-SHA256>` (several while an endpoint secret is being rolled),
//! possibly with other schemes (`v0=…`, test-mode entries) that are ignored. The signed
//! payload is `"{t}.{raw body}"`, keyed by the endpoint's signing secret (`whsec_…`, used
//! as-is as the HMAC key). A request is genuine when any `v1` matches any configured
//! secret (compared in constant time) and `t` is within the tolerance of now (replay
//! protection; Stripe's libraries default to 300 s).

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name (HTTP header names are case-insensitive).
pub const HEADER: &str = "stripe-signature";

/// The largest accepted |now − t|, in seconds, unless configured otherwise.
pub const TOLERANCE_SECS_DEFAULT: u64 = 300;

/// The only scheme Stripe signs live events with.
const SCHEME: &str = "v1";

/// The most signature entries read from one header (a rolling secret gives two; more is
/// noise or an attack on our CPU).
const SIGNATURES_MAX: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// Why a request is not accepted as coming from Stripe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature in the Stripe-Signature header")]
    NoSignature,
    #[error("no signature matches the payload with any configured secret")]
    Mismatch,
    #[error(
        "the signature timestamp is {age_secs} s from now, beyond the {tolerance_secs} s tolerance"
    )]
    OutsideTolerance { age_secs: u64, tolerance_secs: u64 },
}

/// The endpoint signing secrets (one, or two while rolling). Never printed.
#[derive(Clone)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Why a secrets file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the webhook secrets file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the webhook secrets file {path} holds no secret (one per line expected)")]
    Empty { path: String },
}

impl Secrets {
    /// Secrets from a list; `None` when the list is empty (a verifier without a secret
    /// would refuse everything, which is a configuration mistake to report at start).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Option<Secrets> {
        let secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        (!secrets.is_empty()).then_some(Secrets(secrets))
    }

    /// Reads one secret per line (blank lines and `#` comments ignored), e.g. a mounted
    /// Kubernetes Secret.
    pub fn from_file(path: &Path) -> Result<Secrets, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Secrets::new(
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .map(str::to_owned),
        )
        .ok_or_else(|| SecretsError::Empty {
            path: path.display().to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Verifies `Stripe-Signature` headers against the configured secrets.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: Secrets,
    tolerance_secs: u64,
}

impl Verifier {
    pub fn new(secrets: Secrets) -> Verifier {
        Verifier {
            secrets,
            tolerance_secs: TOLERANCE_SECS_DEFAULT,
        }
    }

    pub fn with_tolerance_secs(mut self, tolerance_secs: u64) -> Verifier {
        self.tolerance_secs = tolerance_secs;
        self
    }

    /// Verifies a request's headers and raw body at `now_unix_secs`.
    pub fn verify_request(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now_unix_secs: i64,
    ) -> Result<(), SignatureError> {
        let header = match headers.get(HEADER) {
            None => return Err(SignatureError::MissingHeader),
            Some(value) => value
                .to_str()
                .map_err(|_| SignatureError::Malformed("not visible ASCII"))?,
        };
        self.verify(header, body, now_unix_secs)
    }

    /// Verifies one header value and the raw body at `now_unix_secs`.
    pub fn verify(
        &self,
        header: &str,
        body: &[u8],
        now_unix_secs: i64,
    ) -> Result<(), SignatureError> {
        let parsed = parse_header(header)?;
        let matched = parsed.signatures.iter().any(|signature| {
            self.secrets
                .0
                .iter()
                .any(|secret| matches(secret, &parsed.timestamp, body, signature))
        });
        if !matched {
            return Err(SignatureError::Mismatch);
        }
        let t: i64 = parsed
            .timestamp
            .parse()
            .map_err(|_| SignatureError::Malformed("t is not a whole number of seconds"))?;
        let age_secs = now_unix_secs.abs_diff(t);
        if age_secs > self.tolerance_secs {
            return Err(SignatureError::OutsideTolerance {
                age_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// The `Stripe-Signature` header value Stripe would send for `body` at `timestamp`
/// signed with `secret` (for tests and in-test provider servers).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},{SCHEME}={}",
        signature_hex(secret, timestamp, body)
    )
}

/// The hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed by `secret`.
pub fn signature_hex(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac_over(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

struct ParsedHeader {
    /// Kept as sent: the signed payload uses the exact digits.
    timestamp: String,
    signatures: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp.is_some() => {
                return Err(SignatureError::Malformed("more than one t"));
            }
            "t" => timestamp = Some(value.to_owned()),
            SCHEME if signatures.len() < SIGNATURES_MAX => {
                // A value that is not 32 bytes of hex cannot match; skip it.
                if let Some(bytes) = decode_hex(value).filter(|b| b.len() == 32) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed(
            "t is not a whole number of seconds",
        ));
    }
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(ParsedHeader {
        timestamp,
        signatures,
    })
}

fn matches(secret: &str, timestamp: &str, body: &[u8], signature: &[u8]) -> bool {
    // `verify_slice` compares in constant time.
    mac_over(secret, timestamp, body)
        .verify_slice(signature)
        .is_ok()
}

fn mac_over(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(Secrets::new(secrets.iter().map(|s| s.to_string())).unwrap())
    }

    #[test]
    fn a_signed_body_verifies() {
        let header = sign(SECRET, NOW, BODY);
        assert_eq!(verifier(&[SECRET]).verify(&header, BODY, NOW), Ok(()));
    }

    #[test]
    fn matches_an_independently_computed_vector() {
        // Python: hmac.new(b"whsec_test_secret", b"1700000000." + BODY, sha256).hexdigest()
        assert_eq!(
            signature_hex(SECRET, NOW, BODY),
            "22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31"
        );
        assert_eq!(
            sign(SECRET, NOW, BODY),
            "t=1700000000,v1=22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31"
        );
    }

    #[test]
    fn a_tampered_body_or_another_secret_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let v = verifier(&[SECRET]);
        assert_eq!(v.verify(&header, b"{}", NOW), Err(SignatureError::Mismatch));
        let other = sign("whsec_other", NOW, BODY);
        assert_eq!(v.verify(&other, BODY, NOW), Err(SignatureError::Mismatch));
        // The timestamp is signed too: changing it breaks the signature.
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(v.verify(&moved, BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused() {
        let v = verifier(&[SECRET]);
        let old = sign(SECRET, NOW - 301, BODY);
        assert_eq!(
            v.verify(&old, BODY, NOW),
            Err(SignatureError::OutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        let edge = sign(SECRET, NOW - 300, BODY);
        assert_eq!(v.verify(&edge, BODY, NOW), Ok(()));
        let future = sign(SECRET, NOW + 301, BODY);
        assert!(matches!(
            v.verify(&future, BODY, NOW),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        let lenient = verifier(&[SECRET]).with_tolerance_secs(1_000);
        assert_eq!(lenient.verify(&old, BODY, NOW), Ok(()));
    }

    #[test]
    fn several_signatures_and_other_schemes_are_handled() {
        let good = signature_hex(SECRET, NOW, BODY);
        let bad = signature_hex("whsec_old", NOW, BODY);
        let header = format!("t={NOW},v0=deadbeef,v1={bad},v1={good},x=y");
        assert_eq!(verifier(&[SECRET]).verify(&header, BODY, NOW), Ok(()));
        // Spaces after commas, as some proxies rewrite headers.
        let spaced = format!("t={NOW}, v1={good}");
        assert_eq!(verifier(&[SECRET]).verify(&spaced, BODY, NOW), Ok(()));
        // Only a v0 entry: no v1 signature.
        let v0_only = format!("t={NOW},v0={good}");
        assert_eq!(
            verifier(&[SECRET]).verify(&v0_only, BODY, NOW),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn any_configured_secret_verifies_during_rotation() {
        let v = verifier(&["whsec_new", SECRET]);
        assert_eq!(v.verify(&sign(SECRET, NOW, BODY), BODY, NOW), Ok(()));
        assert_eq!(v.verify(&sign("whsec_new", NOW, BODY), BODY, NOW), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v = verifier(&[SECRET]);
        let good = signature_hex(SECRET, NOW, BODY);
        for header in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={good}"),
            format!("t=abc,v1={good}"),
            format!("t=-5,v1={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
        ] {
            assert!(
                matches!(
                    v.verify(&header, BODY, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
        assert_eq!(
            v.verify(&format!("t={NOW},v1=zz"), BODY, NOW),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn request_headers_are_read_case_insensitively() {
        let v = verifier(&[SECRET]);
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            v.verify_request(&headers, BODY, NOW),
            Err(SignatureError::MissingHeader)
        );
        headers.insert(
            "Stripe-Signature",
            http::HeaderValue::from_str(&sign(SECRET, NOW, BODY)).unwrap(),
        );
        assert_eq!(v.verify_request(&headers, BODY, NOW), Ok(()));
    }

    #[test]
    fn secrets_read_one_per_line_and_are_never_printed() {
        let dir = std::env::temp_dir().join(format!("ovation-webhooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secrets");
        std::fs::write(&path, "# rolling\nwhsec_a\n\n  whsec_b  \n").unwrap();
        let secrets = Secrets::from_file(&path).unwrap();
        assert_eq!(secrets.len(), 2);
        assert!(!format!("{secrets:?}").contains("whsec"));
        std::fs::write(&path, "\n# nothing\n").unwrap();
        assert!(matches!(
            Secrets::from_file(&path),
            Err(SecretsError::Empty { .. })
        ));
        assert!(Secrets::new(Vec::new()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
