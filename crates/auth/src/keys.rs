//! Verifying and minting tokens.
//!
//! The keys file: one key per line, `<kid> <alg> <material> [grant…]`; `#` starts a
//! comment.
//! - `<kid> hs256 <base64 secret>`: a shared secret (at least 32 bytes decoded).
//! - `<kid> eddsa <path to public key PEM>` / `<kid> rs256 <path to public key PEM>`:
//!   public keys for tokens signed elsewhere (paths relative to the keys file).
//!
//! Each key is bound to what it may sign, so holding one key is not holding every role:
//! - `roles=<role>,<role>…`: the roles its tokens may claim. Without it, a key is an
//!   identity provider's: it may sign the roles of people (viewer, creator, gateway,
//!   admin) and never a service's. A service's key says `roles=service:gifting`, and so
//!   can sign nothing else.
//! - `subjects=<id>,<id>…`: the only subjects its tokens may name (e.g. `subjects=gifting`).
//! - `iss=<issuer>`: its tokens must carry exactly this `iss` (and tokens minted with it
//!   do).
//!
//! Besides the signature, every token needs `exp` and `sub`; `nbf` is honoured; a token
//! may not be older, nor live longer from now, than [`TokenPolicy::age_max_secs`]; and
//! with an audience configured, `aud` must name it.
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
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("token is not for this audience (aud)")]
    WrongAudience,
    #[error("token is not from the issuer its key belongs to (iss)")]
    WrongIssuer,
    #[error("token {0}")]
    Age(String),
    #[error("key {kid:?} may not sign tokens with the role {role}")]
    RoleNotGranted { kid: String, role: &'static str },
    #[error("key {kid:?} may not sign tokens for this subject")]
    SubjectNotGranted { kid: String },
    #[error(
        "no dev key found in data directory {data_dir:?} (`ovation up` keeps it there as \
         dev-auth-keys): pass the --data-dir of the suite you mean"
    )]
    NoDevKeys { data_dir: String },
}

/// The claims Ovation reads from a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user or service id.
    pub sub: String,
    /// Role names, e.g. `["viewer"]`. Unknown names grant nothing.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch. Required: defaulted here only so that a
    /// token without it is refused as lacking `exp` rather than as malformed.
    #[serde(default)]
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one or several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
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

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What a key may sign (its line's `roles=`, `subjects=`, `iss=`).
#[derive(Clone, Debug, Default)]
struct Grant {
    /// `None`: the roles of people (an identity provider's key), never a service's.
    roles: Option<Vec<Role>>,
    /// Empty: any subject.
    subjects: Vec<String>,
    issuer: Option<String>,
}

impl Grant {
    fn parse(attributes: &[&str]) -> Result<Grant, String> {
        let mut grant = Grant::default();
        for attribute in attributes {
            let Some((name, value)) = attribute.split_once('=') else {
                return Err(format!(
                    "expected roles=…, subjects=… or iss=…, found {:?}",
                    truncate(attribute)
                ));
            };
            let list = || value.split(',').filter(|v| !v.is_empty());
            match name {
                "roles" => {
                    let roles = list()
                        .map(|r| Role::parse(r).ok_or_else(|| format!("unknown role {r:?}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    if roles.is_empty() {
                        return Err("roles= names no role".into());
                    }
                    grant.roles = Some(roles);
                }
                "subjects" => {
                    grant.subjects = list().map(str::to_owned).collect();
                    if grant.subjects.is_empty() {
                        return Err("subjects= names no subject".into());
                    }
                }
                "iss" if !value.is_empty() => grant.issuer = Some(value.to_owned()),
                other => return Err(format!("unknown or empty key attribute {other:?}")),
            }
        }
        Ok(grant)
    }

    fn may_sign(&self, role: Role) -> bool {
        match &self.roles {
            Some(roles) => roles.contains(&role),
            None => !role.is_service(),
        }
    }
}

/// What a token must satisfy besides its key's grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// When set, every token's `aud` must name it (and service tokens are minted for it).
    pub audience: Option<String>,
    /// Oldest `iat` accepted, and the longest a token may still live from now, in seconds.
    pub age_max_secs: u64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            audience: None,
            age_max_secs: TOKEN_AGE_SECS_MAX_DEFAULT,
        }
    }
}

/// Default of [`TokenPolicy::age_max_secs`]: a day.
pub const TOKEN_AGE_SECS_MAX_DEFAULT: u64 = 86_400;

struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
    grant: Grant,
}

/// The keys tokens may be signed with, and the policy their tokens must meet.
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    policy: TokenPolicy,
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
            let (kid, alg, material, attributes) = line;
            let grant = Grant::parse(&attributes).map_err(|e| problem(format!("line {n}: {e}")))?;
            let key = match alg {
                "hs256" => {
                    let secret =
                        decode_secret(material).map_err(|e| problem(format!("line {n}: {e}")))?;
                    VerifyingKey {
                        kid: kid.to_owned(),
                        algorithm: Algorithm::HS256,
                        key: DecodingKey::from_secret(&secret),
                        grant,
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
                        grant,
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
        Ok(KeySet {
            keys,
            policy: TokenPolicy::default(),
        })
    }

    /// The same keys under `policy`.
    pub fn with_policy(self, policy: TokenPolicy) -> KeySet {
        KeySet { policy, ..self }
    }

    /// What a production set-up lacks: an audience, and an issuer bound to every key.
    pub fn strictness_gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        if self.policy.audience.is_none() {
            gaps.push("no audience is configured (OVATION_AUTH_AUDIENCE)".to_owned());
        }
        for key in self.keys.iter().filter(|k| k.grant.issuer.is_none()) {
            gaps.push(format!("key {:?} names no issuer (iss=…)", key.kid));
        }
        gaps
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
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.policy.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &key.grant.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(truncate(claim)),
                _ => AuthError::Malformed,
            }
        })?;
        let claims = data.claims;
        self.check_age(&claims, now_secs())?;
        check_subject(&claims.sub).map_err(AuthError::BadSubject)?;
        let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        if let Some(role) = roles.iter().find(|r| !key.grant.may_sign(**r)) {
            return Err(AuthError::RoleNotGranted {
                kid: key.kid.clone(),
                role: role.as_str(),
            });
        }
        if !key.grant.subjects.is_empty() && !key.grant.subjects.contains(&claims.sub) {
            return Err(AuthError::SubjectNotGranted {
                kid: key.kid.clone(),
            });
        }
        let age = claims.age_verified_adult.map(VerifiedAge::from_adult_claim);
        Ok(
            Caller::new(claims.sub, roles, claims.act.map(|a| truncate(&a.sub)))
                .with_verified_age(age),
        )
    }
}

impl KeySet {
    /// A token may be neither older nor longer-lived from now than the policy allows: a
    /// stolen token with a far `exp` (or an old one re-used) is refused.
    fn check_age(&self, claims: &Claims, now: u64) -> Result<(), AuthError> {
        let age_max = self.policy.age_max_secs;
        if let Some(iat) = claims.iat {
            if iat > now.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::Age("is issued in the future (iat)".into()));
            }
            if now - iat.min(now) > age_max.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::Age(format!(
                    "is older than {age_max} s (iat); get a fresh one"
                )));
            }
        }
        if claims.exp > now.saturating_add(age_max).saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Age(format!(
                "lives longer than {age_max} s from now (exp)"
            )));
        }
        Ok(())
    }
}

/// Mints HS256 tokens: service identities, `ovation token` against the dev keys, tests.
pub struct Signer {
    kid: String,
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
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
            issuer: None,
            audience: None,
        }
    }

    /// The first `hs256` key of a keys file that may sign `roles` (its `iss=` goes into
    /// the tokens it mints).
    pub fn from_keys_file(path: &Path, roles: &[Role]) -> Result<Signer, AuthError> {
        let problem = |problem: String| AuthError::KeysFile {
            path: path.display().to_string(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
        for (n, (kid, alg, material, attributes)) in parse_lines(&text).map_err(&problem)? {
            let grant = Grant::parse(&attributes).map_err(|e| problem(format!("line {n}: {e}")))?;
            if alg == "hs256" && roles.iter().all(|r| grant.may_sign(*r)) {
                let secret =
                    decode_secret(material).map_err(|e| problem(format!("line {n}: {e}")))?;
                return Ok(Signer {
                    issuer: grant.issuer,
                    ..Signer::hs256(kid, &secret)
                });
            }
        }
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(problem(format!(
            "holds no hs256 key that may sign {} (a service's key needs roles=<its role>)",
            roles.join(", ")
        )))
    }

    /// Tokens minted from now on carry `aud` = `audience`.
    pub fn with_audience(self, audience: Option<&str>) -> Signer {
        Signer {
            audience: audience.map(str::to_owned),
            ..self
        }
    }

    /// A token for `subject` with `roles`, valid for `ttl_secs` from `now_secs`.
    pub fn mint_at(&self, subject: &str, roles: &[Role], now_secs: u64, ttl_secs: u64) -> String {
        let claims = Claims {
            sub: subject.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            exp: now_secs.saturating_add(ttl_secs),
            iat: Some(now_secs),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            ..Claims::default()
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

/// A key's line: kid, algorithm, material, grant attributes.
type KeyLine<'a> = (&'a str, &'a str, &'a str, Vec<&'a str>);

fn parse_lines(text: &str) -> Result<Vec<(usize, KeyLine<'_>)>, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [kid, alg, material, attributes @ ..] = parts.as_slice() else {
            return Err(format!(
                "line {}: expected `<kid> <alg> <material> [roles=…] [subjects=…] [iss=…]`",
                i + 1
            ));
        };
        lines.push((i + 1, (*kid, *alg, *material, attributes.to_vec())));
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

    /// The review's finding: one shared key minted anything. A service's key signs its
    /// own role only; the identity provider's key never signs a service's role.
    #[test]
    fn each_key_signs_only_what_it_is_granted() {
        let (keys, _dir) = keyset(&format!(
            "idp hs256 {}\ngifting hs256 {} roles=service:gifting subjects=gifting\n",
            b64(SECRET_A),
            b64(SECRET_B)
        ));
        let gifting = Signer::hs256("gifting", SECRET_B);
        let caller = keys
            .verify(&gifting.mint("gifting", &[Role::GiftingService], 60))
            .unwrap();
        assert!(caller.has(Role::GiftingService));
        assert_eq!(
            keys.verify(&gifting.mint("gifting", &[Role::Admin], 60)),
            Err(AuthError::RoleNotGranted {
                kid: "gifting".into(),
                role: "admin"
            })
        );
        assert_eq!(
            keys.verify(&gifting.mint("ops", &[Role::GiftingService], 60)),
            Err(AuthError::SubjectNotGranted {
                kid: "gifting".into()
            })
        );
        let idp = Signer::hs256("idp", SECRET_A);
        assert!(keys.verify(&idp.mint("ops", &[Role::Admin], 60)).is_ok());
        assert_eq!(
            keys.verify(&idp.mint("gifting", &[Role::GiftingService], 60)),
            Err(AuthError::RoleNotGranted {
                kid: "idp".into(),
                role: "service:gifting"
            })
        );
    }

    #[test]
    fn a_signer_is_the_key_that_may_sign_its_roles() {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("keys");
        std::fs::write(
            &path,
            format!(
                "idp hs256 {}\nwallet hs256 {} roles=service:wallet iss=ovation-wallet\n",
                b64(SECRET_A),
                b64(SECRET_B)
            ),
        )
        .unwrap();
        let keys = KeySet::from_file(&path).unwrap();
        let wallet = Signer::from_keys_file(&path, &[Role::WalletService]).unwrap();
        let token = wallet.mint("wallet", &[Role::WalletService], 60);
        assert!(keys.verify(&token).is_ok(), "minted with its key's issuer");
        let admin = Signer::from_keys_file(&path, &[Role::Admin]).unwrap();
        assert!(keys.verify(&admin.mint("ops", &[Role::Admin], 60)).is_ok());
        let none = Signer::from_keys_file(&path, &[Role::PayoutService]).unwrap_err();
        assert!(none.to_string().contains("service:payout"), "{none}");
    }

    #[test]
    fn audience_issuer_not_before_and_age_are_checked() {
        let (keys, _dir) = keyset(&format!(
            "idp hs256 {} iss=https://idp.example\n",
            b64(SECRET_A)
        ));
        let keys = keys.with_policy(TokenPolicy {
            audience: Some("ovation".into()),
            age_max_secs: 3_600,
        });
        let signer = Signer::hs256("idp", SECRET_A);
        let now = now_secs();
        let good = Claims {
            sub: "alice".into(),
            roles: vec!["viewer".into()],
            exp: now + 600,
            iat: Some(now),
            iss: Some("https://idp.example".into()),
            aud: Some(Audience::Many(vec!["other".into(), "ovation".into()])),
            ..Claims::default()
        };
        assert!(keys.verify(&signer.mint_claims(&good)).is_ok());
        let with = |change: &dyn Fn(&mut Claims)| {
            let mut claims = good.clone();
            change(&mut claims);
            keys.verify(&signer.mint_claims(&claims))
        };
        assert_eq!(
            with(&|c| c.aud = None),
            Err(AuthError::MissingClaim("aud".into()))
        );
        assert_eq!(
            with(&|c| c.aud = Some(Audience::One("elsewhere".into()))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(&|c| c.iss = None),
            Err(AuthError::MissingClaim("iss".into()))
        );
        assert_eq!(
            with(&|c| c.iss = Some("https://evil.example".into())),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            with(&|c| c.nbf = Some(now + 600)),
            Err(AuthError::NotYetValid)
        );
        assert!(matches!(
            with(&|c| c.iat = Some(now - 7_200)),
            Err(AuthError::Age(_))
        ));
        assert!(matches!(
            with(&|c| c.exp = now + 30 * 86_400),
            Err(AuthError::Age(_))
        ));
        assert!(matches!(
            with(&|c| c.iat = Some(now + 600)),
            Err(AuthError::Age(_))
        ));
        // exp is required: a token without it is refused whatever else it carries.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("idp".into());
        let no_exp = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "alice", "roles": ["viewer"], "aud": "ovation",
                                 "iss": "https://idp.example"}),
            &EncodingKey::from_secret(SECRET_A),
        )
        .unwrap();
        assert_eq!(
            keys.verify(&no_exp),
            Err(AuthError::MissingClaim("exp".into()))
        );
    }

    #[test]
    fn strictness_names_what_production_lacks() {
        let (keys, _dir) = keyset(&format!(
            "idp hs256 {} iss=https://idp.example\nold hs256 {}\n",
            b64(SECRET_A),
            b64(SECRET_B)
        ));
        let gaps = keys.strictness_gaps();
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert!(gaps[0].contains("OVATION_AUTH_AUDIENCE"));
        assert!(gaps[1].contains("\"old\""));
        let keys = keys.with_policy(TokenPolicy {
            audience: Some("ovation".into()),
            ..TokenPolicy::default()
        });
        assert_eq!(keys.strictness_gaps().len(), 1);
    }

    #[test]
    fn bad_grants_are_refused_at_load() {
        for grant in [
            "roles=superuser",
            "roles=",
            "color=blue",
            "iss=",
            "subjects=",
        ] {
            let dir = tempdir::Dir::new();
            let path = dir.0.join("keys");
            std::fs::write(&path, format!("a hs256 {} {grant}\n", b64(SECRET_A))).unwrap();
            assert!(KeySet::from_file(&path).is_err(), "{grant}");
        }
    }

    #[test]
    fn unknown_roles_grant_nothing() {
        let (keys, _dir) = keyset(&format!("a hs256 {}\n", b64(SECRET_A)));
        let token = Signer::hs256("a", SECRET_A).mint_claims(&Claims {
            sub: "mallory".into(),
            roles: vec!["superuser".into()],
            exp: now_secs() + 60,
            ..Claims::default()
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
            act: Some(Actor {
                sub: "gateway".into(),
            }),
            ..Claims::default()
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
                ..Claims::default()
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
