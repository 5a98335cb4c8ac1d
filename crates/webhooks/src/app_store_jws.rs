//! Apple's signed App Store data: a JWS (compact serialization, ES256) whose header carries
//! the signing certificate chain in `x5c`. StoreKit 2 signed transactions, the App Store
//! Server API's answers and App Store Server Notifications v2 all use it.
//!
//! Verification, as Apple documents it and its own libraries do (`ChainVerifier`):
//! - the header's `alg` is `ES256` and `x5c` holds exactly three certificates: the signing
//!   leaf, an Apple Worldwide Developer Relations intermediate, and an Apple root;
//! - the root is byte for byte one of the configured roots (Apple Root CA - G3 in
//!   production; tests configure a root they made);
//! - the intermediate is signed by the root and the leaf by the intermediate, each valid
//!   at the given instant; the leaf carries Apple's receipt-signing marker extension
//!   ([`LEAF_MARKER_OID`]) and the intermediate Apple's WWDR marker
//!   ([`INTERMEDIATE_MARKER_OID`]);
//! - the JWS signature (`r‖s`, 64 bytes) verifies with the leaf's P-256 key over
//!   `"{header}.{payload}"`.
//!
//! Only then is the payload parsed. What the payload must say (bundle id, product id,
//! environment) is the caller's to check.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Longest signed value accepted, in bytes (a transaction with its chain is ~4 KiB).
pub const JWS_BYTES_MAX: usize = 32 * 1024;
/// Apple's chain: leaf, intermediate, root.
pub const CHAIN_LENGTH: usize = 3;
/// Marks Apple's App Store receipt-signing leaf certificates.
pub const LEAF_MARKER_OID: &str = "1.2.840.113635.100.6.11.1";
/// Marks Apple's Worldwide Developer Relations intermediate certificates.
pub const INTERMEDIATE_MARKER_OID: &str = "1.2.840.113635.100.6.2.1";
/// The only algorithm Apple signs with.
const ALGORITHM: &str = "ES256";

/// Why a signed value is not accepted as Apple's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the signed value is longer than {JWS_BYTES_MAX} bytes")]
    TooLong,
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    #[error("the JWS is signed with {0:?}, not ES256")]
    Algorithm(String),
    #[error("the x5c chain is not leaf, intermediate and root: {0}")]
    Chain(&'static str),
    #[error("the chain's root is not a configured Apple root")]
    UntrustedRoot,
    #[error("a certificate of the chain is not valid at the instant checked")]
    Expired,
    #[error("the JWS signature does not verify with the leaf's key")]
    Signature,
}

/// The trusted roots (DER), e.g. Apple Root CA - G3. Loaded from PEM or DER files.
#[derive(Clone, Default)]
pub struct AppleRoots(Vec<Vec<u8>>);

impl fmt::Debug for AppleRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppleRoots({} certificates)", self.0.len())
    }
}

impl AppleRoots {
    /// Roots given as DER.
    pub fn from_der(roots: Vec<Vec<u8>>) -> AppleRoots {
        AppleRoots(roots)
    }

    /// Roots from a file: PEM (one or more `CERTIFICATE` blocks) or one DER certificate,
    /// as Apple publishes it (`AppleRootCA-G3.cer`).
    pub fn from_file(path: &std::path::Path) -> Result<AppleRoots, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let roots: Vec<Vec<u8>> = if bytes.starts_with(b"-----BEGIN") {
            x509_parser::pem::Pem::iter_from_buffer(&bytes)
                .filter_map(Result::ok)
                .filter(|pem| pem.label == "CERTIFICATE")
                .map(|pem| pem.contents)
                .collect()
        } else {
            vec![bytes]
        };
        for der in &roots {
            X509Certificate::from_der(der)
                .map_err(|e| format!("{}: not a certificate: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no certificate", path.display()));
        }
        Ok(AppleRoots(roots))
    }

    fn trusts(&self, der: &[u8]) -> bool {
        self.0.iter().any(|root| root.as_slice() == der)
    }
}

/// Verifies `jws` as Apple-signed at `at_unix_secs` and returns its payload.
pub fn verify(
    jws: &str,
    roots: &AppleRoots,
    at_unix_secs: i64,
) -> Result<serde_json::Value, JwsError> {
    if jws.len() > JWS_BYTES_MAX {
        return Err(JwsError::TooLong);
    }
    let mut parts = jws.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("expected three dot-separated parts"));
    };
    let header: serde_json::Value = decode_json(header_b64, "the header")?;
    let alg = header["alg"].as_str().unwrap_or_default();
    if alg != ALGORITHM {
        return Err(JwsError::Algorithm(alg.to_owned()));
    }
    let chain: Vec<Vec<u8>> = header["x5c"]
        .as_array()
        .ok_or(JwsError::Chain("no x5c array"))?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|s| STANDARD.decode(s).ok())
                .ok_or(JwsError::Chain("an x5c entry is not base64 DER"))
        })
        .collect::<Result<_, _>>()?;
    if chain.len() != CHAIN_LENGTH {
        return Err(JwsError::Chain("not three certificates"));
    }
    if !roots.trusts(&chain[2]) {
        return Err(JwsError::UntrustedRoot);
    }
    let (leaf, intermediate, root) = (
        parse_certificate(&chain[0])?,
        parse_certificate(&chain[1])?,
        parse_certificate(&chain[2])?,
    );
    check_chain(&leaf, &intermediate, &root, at_unix_secs)?;

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwsError::Malformed("the signature is not base64url"))?;
    let signed = &jws[..header_b64.len() + 1 + payload_b64.len()];
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        leaf.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| JwsError::Signature)?;
    decode_json(payload_b64, "the payload")
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, JwsError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(JwsError::Chain("a certificate does not parse")),
    }
}

/// Root → intermediate → leaf, each signed by the next, valid at the instant, with
/// Apple's marker extensions.
fn check_chain(
    leaf: &X509Certificate<'_>,
    intermediate: &X509Certificate<'_>,
    root: &X509Certificate<'_>,
    at_unix_secs: i64,
) -> Result<(), JwsError> {
    let at =
        x509_parser::time::ASN1Time::from_timestamp(at_unix_secs).map_err(|_| JwsError::Expired)?;
    for cert in [leaf, intermediate, root] {
        if !cert.validity().is_valid_at(at) {
            return Err(JwsError::Expired);
        }
    }
    if !intermediate.is_ca() {
        return Err(JwsError::Chain("the intermediate is not a CA"));
    }
    let marked = |cert: &X509Certificate<'_>, oid: &str| {
        cert.extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == oid)
    };
    if !marked(leaf, LEAF_MARKER_OID) {
        return Err(JwsError::Chain(
            "the leaf is not an App Store signing certificate",
        ));
    }
    if !marked(intermediate, INTERMEDIATE_MARKER_OID) {
        return Err(JwsError::Chain(
            "the intermediate is not Apple's WWDR intermediate",
        ));
    }
    intermediate
        .verify_signature(Some(root.public_key()))
        .map_err(|_| JwsError::Chain("the intermediate is not signed by the root"))?;
    leaf.verify_signature(Some(intermediate.public_key()))
        .map_err(|_| JwsError::Chain("the leaf is not signed by the intermediate"))?;
    Ok(())
}

fn decode_json(part: &str, what: &'static str) -> Result<serde_json::Value, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwsError::Malformed(what))
}

/// Signs `payload` as the App Store would, with a test chain (see [`testing::TestChain`]):
/// for tests and in-test provider servers only (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    };

    /// A root, an Apple-like WWDR intermediate and a receipt-signing leaf, made now.
    pub struct TestChain {
        pub root_der: Vec<u8>,
        pub intermediate_der: Vec<u8>,
        pub leaf_der: Vec<u8>,
        leaf_pkcs8: Vec<u8>,
    }

    fn oid(dotted: &str) -> Vec<u64> {
        dotted.split('.').filter_map(|n| n.parse().ok()).collect()
    }

    fn marker(dotted: &str) -> CustomExtension {
        // Apple's markers carry an ASN.1 NULL.
        CustomExtension::from_oid_content(&oid(dotted), vec![0x05, 0x00])
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params
    }

    impl TestChain {
        /// A fresh chain. With `marked` false the leaf lacks Apple's marker (to test that
        /// it is refused).
        pub fn new(marked: bool) -> TestChain {
            let root_key = KeyPair::generate().expect("a key");
            let root_params = ca_params("Test Apple Root CA - G3");
            let root = root_params.self_signed(&root_key).expect("root");
            let root_issuer = Issuer::new(root_params, root_key);

            let intermediate_key = KeyPair::generate().expect("a key");
            let mut intermediate_params = ca_params("Test Apple WWDR CA G6");
            intermediate_params
                .custom_extensions
                .push(marker(INTERMEDIATE_MARKER_OID));
            let intermediate = intermediate_params
                .signed_by(&intermediate_key, &root_issuer)
                .expect("intermediate");
            let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

            let leaf_key = KeyPair::generate().expect("a key");
            let mut leaf_params = CertificateParams::new(Vec::<String>::new()).expect("params");
            leaf_params.distinguished_name.push(
                DnType::CommonName,
                "Test Prod ECC Mac App Store and iTunes Store Receipt Signing",
            );
            if marked {
                leaf_params.custom_extensions.push(marker(LEAF_MARKER_OID));
            }
            let leaf = leaf_params
                .signed_by(&leaf_key, &intermediate_issuer)
                .expect("leaf");
            TestChain {
                root_der: root.der().to_vec(),
                intermediate_der: intermediate.der().to_vec(),
                leaf_der: leaf.der().to_vec(),
                leaf_pkcs8: leaf_key.serialize_der(),
            }
        }

        /// The roots to configure to trust this chain.
        pub fn roots(&self) -> AppleRoots {
            AppleRoots::from_der(vec![self.root_der.clone()])
        }

        /// `payload` signed ES256 with the leaf, the chain in `x5c`.
        pub fn sign(&self, payload: &serde_json::Value) -> String {
            let x5c: Vec<String> = [&self.leaf_der, &self.intermediate_der, &self.root_der]
                .iter()
                .map(|der| STANDARD.encode(der))
                .collect();
            let header = serde_json::json!({"alg": ALGORITHM, "x5c": x5c});
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(payload.to_string())
            );
            let rng = ring::rand::SystemRandom::new();
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &self.leaf_pkcs8,
                &rng,
            )
            .expect("the leaf's key");
            let signature = key
                .sign(&rng, signing_input.as_bytes())
                .expect("a signature");
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.as_ref())
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestChain;
    use super::*;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn transaction() -> serde_json::Value {
        serde_json::json!({
            "transactionId": "2000000123456789",
            "bundleId": "dev.ovation.app",
            "productId": "coins_1000",
            "environment": "Sandbox",
        })
    }

    #[test]
    fn a_transaction_signed_by_the_configured_chain_verifies_and_reads_back() {
        let chain = TestChain::new(true);
        let jws = chain.sign(&transaction());
        let payload = verify(&jws, &chain.roots(), now()).expect("verifies");
        assert_eq!(payload, transaction());
    }

    #[test]
    fn anything_else_is_refused() {
        let chain = TestChain::new(true);
        let jws = chain.sign(&transaction());
        let at = now();

        // Another root: the chain is not Apple's.
        let stranger = TestChain::new(true);
        assert_eq!(
            verify(&jws, &stranger.roots(), at),
            Err(JwsError::UntrustedRoot)
        );

        // A payload changed after signing.
        let mut parts: Vec<&str> = jws.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"transactionId": "2000000123456789", "productId": "coins_10000"})
                .to_string(),
        );
        parts[1] = &forged_payload;
        assert_eq!(
            verify(&parts.join("."), &chain.roots(), at),
            Err(JwsError::Signature)
        );

        // Signed by a key whose chain is otherwise fine but whose leaf is not marked.
        let unmarked = TestChain::new(false);
        assert!(matches!(
            verify(&unmarked.sign(&transaction()), &unmarked.roots(), at),
            Err(JwsError::Chain(_))
        ));

        // A leaf from one chain with another chain's intermediate and root.
        let mixed = {
            let header = serde_json::json!({"alg": "ES256", "x5c": [
                STANDARD.encode(&stranger.leaf_der),
                STANDARD.encode(&chain.intermediate_der),
                STANDARD.encode(&chain.root_der),
            ]});
            let body = jws.split('.').skip(1).collect::<Vec<_>>().join(".");
            format!("{}.{body}", URL_SAFE_NO_PAD.encode(header.to_string()))
        };
        assert!(matches!(
            verify(&mixed, &chain.roots(), at),
            Err(JwsError::Chain(_))
        ));

        // Outside the certificates' validity (rcgen's default ends in 4096).
        assert_eq!(
            verify(&jws, &chain.roots(), 0),
            Err(JwsError::Expired),
            "1970 is before the chain was valid"
        );

        // Not ES256, not three parts, too long.
        let none_alg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            jws.split_once('.')
                .map(|(_, rest)| rest)
                .unwrap_or_default()
        );
        assert_eq!(
            verify(&none_alg, &chain.roots(), at),
            Err(JwsError::Algorithm("none".into()))
        );
        assert!(matches!(
            verify("a.b", &chain.roots(), at),
            Err(JwsError::Malformed(_))
        ));
        assert_eq!(
            verify(&"x".repeat(JWS_BYTES_MAX + 1), &chain.roots(), at),
            Err(JwsError::TooLong)
        );
    }
}
