//! Verifying and minting tokens.
//!
//! The keys file: one key per line, `<kid> <alg> <material>`; `#` starts a comment.
//! - `<kid> hs256 <base64 secret>`: a shared secret (at least 32 bytes decoded).
//! - `<kid> eddsa <path to public key PEM>` / `<kid> rs256 <path to public key PEM>`:
//!   public keys for tokens signed elsewhere (paths relative to the keys file).
//!
//! Several lines make rotation possible: tokens name their key with the `kid` header.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Caller, Role, VerifiedAge};

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Shortest HS256 secret accepted, in bytes.
const HS256_SECRET_BYTES_MIN: usize = 32;
/// Most keys one keys file may hold.
const KEYS_MAX: usize = 64;
/// Longest token accepted, in bytes (a JWT with a few claims is a few hundred).
const TOKEN_BYTES_MAX: usize = 8_192;

/// Why a token was not accepted. Messages never contain the token or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("token has expired")]
    Expired,
    #[error("token signature is not valid")]
    BadSignature,
    #[error("token names key id {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("token has no key id (kid) and several keys are configured")]
    NoKeyId,
    #[error("token subject is not a valid id: {0}")]
    BadSubject(String),
    #[error("keys file {path}: {problem}")]
    KeysFile { path: String, problem: String },
}

/// The claims Ovation reads from a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user or service id.
    pub sub: String,
    /// Role names, e.g. `["viewer"]`. Unknown names grant nothing.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// RFC 8693 actor: who presents the token on the subject's behalf (the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The subject's age as verified by whoever issued the token (the identity provider
    /// or the platform's gateway, after an age check): `true` = an adult, `false` = a
    /// minor. Absent = not verified; a user's own statement is never this claim. Only a
    /// key trusted to vouch for users should sign it (see [`crate::VerifiedAge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_verified_adult: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys tokens may be signed with.
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Reads a keys file (format in the module docs).
    pub fn from_file(path: &Path) -> Result<KeySet, AuthError> {
        let problem = |problem: String| AuthError::KeysFile {
            path: path.display().to_string(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut keys = Vec::new();
        for (n, line) in parse_lines(&text).map_err(&problem)? {
            let (kid, alg, material) = line;
            let key = match alg {
                "hs256" => {
                    let secret =
                        decode_secret(material).map_err(|e| problem(format!("line {n}: {e}")))?;
                    VerifyingKey {
                        kid: kid.to_owned(),
                        algorithm: Algorithm::HS256,
                        key: DecodingKey::from_secret(&secret),
                    }
                }
                "eddsa" | "rs256" => {
                    let pem_path = dir.join(material);
                    let pem = std::fs::read(&pem_path).map_err(|e| {
                        problem(format!("line {n}: cannot read {}: {e}", pem_path.display()))
                    })?;
                    let (algorithm, key) = if alg == "eddsa" {
                        (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem))
                    } else {
                        (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
                    };
                    let key = key.map_err(|_| {
                        problem(format!(
                            "line {n}: {} is not a {alg} public key PEM",
                            pem_path.display()
                        ))
                    })?;
                    VerifyingKey {
                        kid: kid.to_owned(),
                        algorithm,
                        key,
                    }
                }
                other => {
                    return Err(problem(format!(
                        "line {n}: unknown algorithm {other:?}; use hs256, eddsa or rs256"
                    )));
                }
            };
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(problem("holds no keys".into()));
        }
        if keys.len() > KEYS_MAX {
            return Err(problem(format!("holds more than {KEYS_MAX} keys")));
        }
        Ok(KeySet { keys })
    }

    /// Checks a token's signature, expiry and subject; returns who is calling.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid)
                .ok_or_else(|| AuthError::UnknownKey(truncate(kid)))?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(AuthError::NoKeyId),
        };
        // The key decides the algorithm, never the token: no alg-confusion attacks.
        if header.alg != key.algorithm {
            return Err(AuthError::BadSignature);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            }
        })?;
        let claims = data.claims;
        check_subject(&claims.sub).map_err(AuthError::BadSubject)?;
        let roles = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let age = claims.age_verified_adult.map(VerifiedAge::from_adult_claim);
        Ok(
            Caller::new(claims.sub, roles, claims.act.map(|a| truncate(&a.sub)))
                .with_verified_age(age),
        )
    }
}

/// Mints HS256 tokens: for `ovation token` against the dev keys, and for tests.
pub struct Signer {
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Signer {
        Signer {
            kid: kid.into(),
            key: EncodingKey::from_secret(secret),
        }
    }

    /// The first `hs256` key of a keys file.
    pub fn from_keys_file(path: &Path) -> Result<Signer, AuthError> {
        let problem = |problem: String| AuthError::KeysFile {
            path: path.display().to_string(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
        for (n, (kid, alg, material)) in parse_lines(&text).map_err(&problem)? {
            if alg == "hs256" {
                let secret =
                    decode_secret(material).map_err(|e| problem(format!("line {n}: {e}")))?;
                return Ok(Signer::hs256(kid, &secret));
            }
        }
        Err(problem("holds no hs256 key to sign with".into()))
    }

    /// A token for `subject` with `roles`, valid for `ttl_secs` from `now_secs`.
    pub fn mint_at(&self, subject: &str, roles: &[Role], now_secs: u64, ttl_secs: u64) -> String {
        let claims = Claims {
            sub: subject.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            exp: now_secs.saturating_add(ttl_secs),
            iat: Some(now_secs),
            act: None,
            age_verified_adult: None,
        };
        self.mint_claims(&claims)
    }

    /// A token for `subject` with `roles`, valid for `ttl_secs` from now.
    pub fn mint(&self, subject: &str, roles: &[Role], ttl_secs: u64) -> String {
        self.mint_at(subject, roles, now_secs(), ttl_secs)
    }

    pub fn mint_claims(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        // Serializing these claims with an HMAC key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }
}

/// A subject must be a valid id: it becomes a user id in the services.
pub fn check_subject(sub: &str) -> Result<(), String> {
    ovation_types::ResourceId::parse(sub).map(|_| ())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type KeyLine<'a> = (&'a str, &'a str, &'a str);

fn parse_lines(text: &str) -> Result<Vec<(usize, KeyLine<'_>)>, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [kid, alg, material] = parts.as_slice() else {
            return Err(format!("line {}: expected `<kid> <alg> <material>`", i + 1));
        };
        lines.push((i + 1, (*kid, *alg, *material)));
    }
    Ok(lines)
}

fn decode_secret(material: &str) -> Result<Vec<u8>, String> {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(material)
        .map_err(|_| "the hs256 secret is not valid base64".to_string())?;
    if secret.len() < HS256_SECRET_BYTES_MIN {
        return Err(format!(
            "the hs256 secret must be at least {HS256_SECRET_BYTES_MIN} bytes"
        ));
    }
    Ok(secret)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyset(lines: &str) -> (KeySet, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("keys");
        std::fs::write(&path, lines).unwrap();
        (KeySet::from_file(&path).unwrap(), dir)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p =
                    std::env::temp_dir().join(format!("ovation-auth-{}", rand::random::<u64>()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const SECRET_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SECRET_B: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_valid_token_becomes_a_caller() {
        let (keys, _dir) = keyset(&format!("a hs256 {}\n", b64(SECRET_A)));
        let token = Signer::hs256("a", SECRET_A).mint("alice", &[Role::Viewer], 60);
        let caller = keys.verify(&token).unwrap();
        assert_eq!(caller.subject(), "alice");
        assert!(caller.has(Role::Viewer));
        assert!(!caller.has(Role::Admin));
        assert!(caller.is_user("alice"));
        assert!(!caller.is_user("bob"));
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let (keys, _dir) = keyset(&format!(
            "a hs256 {}\nb hs256 {}\n",
            b64(SECRET_A),
            b64(SECRET_B)
        ));
        let expired = Signer::hs256("a", SECRET_A).mint_at("alice", &[Role::Viewer], 1_000, 60);
        assert_eq!(keys.verify(&expired), Err(AuthError::Expired));
        let forged = Signer::hs256("a", SECRET_B).mint("alice", &[Role::Admin], 60);
        assert_eq!(keys.verify(&forged), Err(AuthError::BadSignature));
        let unknown = Signer::hs256("zz", SECRET_A).mint("alice", &[Role::Viewer], 60);
        assert_eq!(
            keys.verify(&unknown),
            Err(AuthError::UnknownKey("zz".into()))
        );
        assert_eq!(keys.verify("not.a.token"), Err(AuthError::Malformed));
        assert_eq!(keys.verify(""), Err(AuthError::Malformed));
        // Rotation: a token under the second key verifies too.
        let rotated = Signer::hs256("b", SECRET_B).mint("alice", &[Role::Viewer], 60);
        assert!(keys.verify(&rotated).is_ok());
    }

    #[test]
    fn errors_never_echo_secrets() {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("keys");
        std::fs::write(&path, "a hs256 c2hvcnQ=\n").unwrap();
        let error = KeySet::from_file(&path).unwrap_err().to_string();
        assert!(!error.contains("c2hvcnQ="), "{error}");
        assert!(error.contains("at least 32 bytes"));
    }

    #[test]
    fn unknown_roles_grant_nothing() {
        let (keys, _dir) = keyset(&format!("a hs256 {}\n", b64(SECRET_A)));
        let token = Signer::hs256("a", SECRET_A).mint_claims(&Claims {
            sub: "mallory".into(),
            roles: vec!["superuser".into()],
            exp: now_secs() + 60,
            iat: None,
            act: None,
            age_verified_adult: None,
        });
        let caller = keys.verify(&token).unwrap();
        assert!(caller.roles().is_empty());
    }

    #[test]
    fn the_age_claim_reaches_the_caller() {
        let (keys, _dir) = keyset(&format!("a hs256 {}\n", b64(SECRET_A)));
        let signer = Signer::hs256("a", SECRET_A);
        let with_age = |age: Option<bool>| {
            signer.mint_claims(&Claims {
                sub: "alice".into(),
                roles: vec!["viewer".into()],
                exp: now_secs() + 60,
                age_verified_adult: age,
                ..Claims::default()
            })
        };
        let age = |token: String| keys.verify(&token).unwrap().verified_age();
        assert_eq!(age(with_age(Some(true))), Some(VerifiedAge::Adult));
        assert_eq!(age(with_age(Some(false))), Some(VerifiedAge::Minor));
        assert_eq!(age(with_age(None)), None);
        // The claim's wire name, as identity providers are told to write it.
        let raw = serde_json::to_value(Claims {
            age_verified_adult: Some(true),
            ..Claims::default()
        })
        .unwrap();
        assert_eq!(raw["age_verified_adult"], serde_json::json!(true));
        // A token whose claim is not a boolean is refused, not read as "unverified".
        #[derive(Serialize)]
        struct Odd {
            sub: &'static str,
            exp: u64,
            age_verified_adult: &'static str,
        }
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("a".into());
        let odd = jsonwebtoken::encode(
            &header,
            &Odd {
                sub: "alice",
                exp: now_secs() + 60,
                age_verified_adult: "yes",
            },
            &EncodingKey::from_secret(SECRET_A),
        )
        .unwrap();
        assert_eq!(keys.verify(&odd), Err(AuthError::Malformed));
    }
}

#[cfg(test)]
mod public_key_tests {
    use super::*;

    /// Production set-up: tokens signed elsewhere with Ed25519; the service holds only the
    /// public key, named by kid in the keys file.
    #[test]
    fn eddsa_tokens_verify_against_a_public_key_file() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let dir = std::env::temp_dir().join(format!("ovation-ed-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gw.pem"), pair.public_key_pem()).unwrap();
        std::fs::write(dir.join("keys"), "gw-1 eddsa gw.pem\n").unwrap();
        let keys = KeySet::from_file(&dir.join("keys")).unwrap();

        let signing = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
        let claims = Claims {
            sub: "alice".into(),
            roles: vec!["viewer".into()],
            exp: now_secs() + 60,
            iat: None,
            act: Some(Actor {
                sub: "gateway".into(),
            }),
            age_verified_adult: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("gw-1".into());
        let token = jsonwebtoken::encode(&header, &claims, &signing).unwrap();
        let caller = keys.verify(&token).unwrap();
        assert_eq!(
            (caller.subject(), caller.actor()),
            ("alice", Some("gateway"))
        );

        // An HS256 token naming the EdDSA key id is refused: the key decides the algorithm.
        let confused = Signer::hs256("gw-1", &[1u8; 32]).mint("alice", &[Role::Admin], 60);
        assert_eq!(keys.verify(&confused), Err(AuthError::BadSignature));
        // A token signed by another Ed25519 key is refused.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(keys.verify(&forged), Err(AuthError::BadSignature));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Tokens from an identity provider signing with RS256: the service holds its public key.
    /// The RSA keys are fixtures (testdata/, test only): rcgen cannot generate RSA keys.
    #[test]
    fn rs256_tokens_verify_against_a_public_key_file() {
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let dir = std::env::temp_dir().join(format!("ovation-rs-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            testdata.join("test-only-rsa-idp.pub.pem"),
            dir.join("idp.pem"),
        )
        .unwrap();
        std::fs::write(dir.join("keys"), "idp-7 rs256 idp.pem\n").unwrap();
        let keys = KeySet::from_file(&dir.join("keys")).unwrap();

        let sign_with = |file: &str, header: &Header| {
            let pem = std::fs::read(testdata.join(file)).unwrap();
            let claims = Claims {
                sub: "bob".into(),
                roles: vec!["creator".into()],
                exp: now_secs() + 60,
                iat: None,
                act: None,
                age_verified_adult: None,
            };
            jsonwebtoken::encode(header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap())
                .unwrap()
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("idp-7".into());
        let caller = keys
            .verify(&sign_with("test-only-rsa-idp.key", &header))
            .unwrap();
        assert_eq!(caller.subject(), "bob");
        assert!(caller.has(Role::Creator));

        // Signed by another RSA key: refused.
        assert_eq!(
            keys.verify(&sign_with("test-only-rsa-other.key", &header)),
            Err(AuthError::BadSignature)
        );
        // HS256 naming the RSA key id (the classic public-key-as-HMAC-secret confusion):
        // refused, the key decides the algorithm.
        let public_pem = std::fs::read(dir.join("idp.pem")).unwrap();
        let confused = Signer::hs256("idp-7", &public_pem).mint("bob", &[Role::Admin], 60);
        assert_eq!(keys.verify(&confused), Err(AuthError::BadSignature));
        // RS384 with the right key is not RS256: refused too.
        let mut rs384 = Header::new(Algorithm::RS384);
        rs384.kid = Some("idp-7".into());
        assert!(
            keys.verify(&sign_with("test-only-rsa-idp.key", &rs384))
                .is_err()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
