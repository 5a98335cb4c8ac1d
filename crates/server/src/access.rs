//! Who may call (the `ovation-auth` crate verifies tokens; this module applies them to calls).
//!
//! Authentication on every RPC (but health and reflection), and per-caller rate limits on
//! mutating RPCs, as one tower layer; plus the per-RPC authorization helpers services call.
//!
//! The layer verifies the bearer token and puts the [`Caller`] into the request's
//! extensions; a missing or bad token is answered UNAUTHENTICATED before the service sees
//! anything. Each RPC then states who may call it with [`require`] or [`require_user`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ovation_auth::{Caller, KeySet, Role, TokenPolicy};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ApiError;

/// Authentication and rate-limit settings, as flags and environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct AuthArgs {
    /// Keys that bearer tokens may be signed with (one `<kid> <alg> <material> [grant…]`
    /// per line; each key bound to the roles, subjects and issuer it may sign).
    #[arg(long, env = "OVATION_AUTH_KEYS_FILE")]
    pub auth_keys_file: Option<PathBuf>,
    /// The audience every token must name in `aud` (service tokens are minted for it).
    #[arg(long, env = "OVATION_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Oldest token accepted (by `iat`), and the longest one may still live, in seconds.
    #[arg(long, env = "OVATION_AUTH_TOKEN_AGE_MAX_SECS", default_value_t = ovation_auth::keys::TOKEN_AGE_SECS_MAX_DEFAULT)]
    pub auth_token_age_max_secs: u64,
    /// Production mode: refuse to start unless an audience is set and every key names its
    /// issuer (`iss=`), so no token is taken on a signature alone.
    #[arg(long, env = "OVATION_AUTH_STRICT")]
    pub auth_strict: bool,
    /// Turn authentication off: every caller may do everything. For experiments only.
    #[arg(long, env = "OVATION_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Mutating calls per second one caller may sustain (services are exempt).
    #[arg(long, env = "OVATION_RATE_LIMIT_PER_SECOND", default_value_t = 20)]
    pub rate_limit_per_second: u32,
    /// Mutating calls one caller may make in a burst.
    #[arg(long, env = "OVATION_RATE_LIMIT_BURST", default_value_t = 40)]
    pub rate_limit_burst: u32,
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            auth_keys_file: None,
            auth_audience: None,
            auth_token_age_max_secs: ovation_auth::keys::TOKEN_AGE_SECS_MAX_DEFAULT,
            auth_strict: false,
            insecure_no_auth: false,
            rate_limit_per_second: 20,
            rate_limit_burst: 40,
        }
    }
}

/// Why authentication could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "authentication is on but no keys are configured: set OVATION_AUTH_KEYS_FILE \
         (--auth-keys-file), or --insecure-no-auth for experiments"
    )]
    NoKeys,
    #[error(transparent)]
    Keys(#[from] ovation_auth::AuthError),
    #[error("OVATION_AUTH_STRICT is on, but: {}", .0.join("; "))]
    NotStrict(Vec<String>),
    #[error("OVATION_AUTH_STRICT and OVATION_INSECURE_NO_AUTH contradict each other")]
    StrictWithoutAuth,
}

/// How callers are identified.
#[derive(Clone, Debug)]
pub enum Authenticator {
    /// Bearer tokens verified against these keys.
    Keys(Arc<KeySet>),
    /// `--insecure-no-auth`: everyone is [`Caller::unchecked`].
    Off,
}

impl AuthArgs {
    pub fn authenticator(&self) -> Result<Authenticator, AuthSetupError> {
        if self.insecure_no_auth && self.auth_strict {
            return Err(AuthSetupError::StrictWithoutAuth);
        }
        if self.insecure_no_auth {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this port can \
                 do anything, including minting coins. Never run like this outside an experiment."
            );
            return Ok(Authenticator::Off);
        }
        let path = self.auth_keys_file.as_ref().ok_or(AuthSetupError::NoKeys)?;
        let keys = KeySet::from_file(path)?.with_policy(TokenPolicy {
            audience: self.auth_audience.clone(),
            age_max_secs: self.auth_token_age_max_secs,
        });
        if self.auth_strict {
            let gaps = keys.strictness_gaps();
            if !gaps.is_empty() {
                return Err(AuthSetupError::NotStrict(gaps));
            }
        }
        Ok(Authenticator::Keys(Arc::new(keys)))
    }
}

/// RPCs anyone may call: health checks (load balancers, kubelets) and reflection.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// Read RPCs are named Get*, List*, Quote*, Watch* (a convention the contracts keep);
/// everything else mutates and is rate limited.
fn is_mutating(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or("");
    !["Get", "List", "Quote", "Watch"]
        .iter()
        .any(|prefix| method.starts_with(prefix))
}

/// The bearer token of a request, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Token buckets per caller, bounded in how many callers they track.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Most callers tracked at once; beyond it, idle (full) buckets are dropped first.
const RATE_LIMIT_CALLERS_MAX: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `caller`; if there is none, how long until there is.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !buckets.contains_key(caller) && buckets.len() >= RATE_LIMIT_CALLERS_MAX {
            // A bucket idle long enough to be full again carries no state: drop those.
            let refill = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.updated) < refill);
            if buckets.len() >= RATE_LIMIT_CALLERS_MAX {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// The tower layer: authenticate, rate limit, then pass the [`Caller`] on.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Authenticator,
    limiter: Arc<RateLimiter>,
}

impl AuthLayer {
    pub fn new(authenticator: Authenticator, limiter: RateLimiter) -> Self {
        AuthLayer {
            authenticator,
            limiter: Arc::new(limiter),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if is_public(path) {
            return Box::pin(self.inner.call(request));
        }
        let caller = match &self.layer.authenticator {
            Authenticator::Off => Caller::unchecked(),
            Authenticator::Keys(keys) => {
                let verified = match bearer(request.headers()) {
                    Some(token) => keys.verify(token),
                    None => Err(ovation_auth::AuthError::Missing),
                };
                match verified {
                    Ok(caller) => caller,
                    Err(e) => {
                        let status: Status = ApiError::Unauthenticated(e.to_string()).into();
                        return Box::pin(async move { Ok(status.into_http()) });
                    }
                }
            }
        };
        if is_mutating(path)
            && !caller.is_service()
            && let Err(retry_after) = self.layer.limiter.check(caller.subject(), Instant::now())
        {
            let status = Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "rate limit: too many calls from {}; retry in {} ms",
                    caller.subject(),
                    retry_after.as_millis()
                ),
                ErrorDetails::with_retry_info(Some(retry_after)),
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        request.extensions_mut().insert(caller);
        Box::pin(self.inner.call(request))
    }
}

/// The verified caller of a request (put there by [`AuthLayer`]).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no verified caller".into()))
}

/// The caller, if it has one of `roles`; PERMISSION_DENIED otherwise.
pub fn require<T>(request: &tonic::Request<T>, roles: &[Role]) -> Result<Caller, ApiError> {
    let caller = caller(request)?;
    if caller.has_any(roles) {
        Ok(caller)
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may not call this: it requires the role {}",
            caller.subject(),
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

/// The caller, if it is user `user_id` or has one of `roles`; PERMISSION_DENIED otherwise.
pub fn require_user<T>(
    request: &tonic::Request<T>,
    user_id: &str,
    roles: &[Role],
) -> Result<Caller, ApiError> {
    let caller = caller(request)?;
    if caller.is_user(user_id) || caller.has_any(roles) {
        Ok(caller)
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may not act for {user_id}",
            caller.subject()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prod overlay's OVATION_AUTH_STRICT: no start without an audience and an issuer
    /// bound to every key.
    #[test]
    fn strict_authentication_refuses_to_start_with_gaps() {
        let dir = std::env::temp_dir().join(format!("ovation-strict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys");
        let secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        std::fs::write(
            &keys,
            format!("idp hs256 {secret} iss=https://idp.example\n"),
        )
        .unwrap();
        let mut args = AuthArgs {
            auth_keys_file: Some(keys.clone()),
            auth_strict: true,
            ..AuthArgs::default()
        };
        let refused = args.authenticator().unwrap_err().to_string();
        assert!(refused.contains("OVATION_AUTH_AUDIENCE"), "{refused}");
        args.auth_audience = Some("ovation".into());
        assert!(args.authenticator().is_ok());
        std::fs::write(&keys, format!("idp hs256 {secret}\n")).unwrap();
        let refused = args.authenticator().unwrap_err().to_string();
        assert!(refused.contains("names no issuer"), "{refused}");
        args.auth_strict = false;
        assert!(
            args.authenticator().is_ok(),
            "only strict mode asks for issuers"
        );
        args.insecure_no_auth = true;
        args.auth_strict = true;
        assert!(
            args.authenticator().is_err(),
            "strict and no auth contradict"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_are_not_rate_limited_and_writes_are() {
        assert!(!is_mutating("/ovation.catalog.v1.CatalogService/ListGifts"));
        assert!(!is_mutating("/ovation.catalog.v1.CatalogService/QuoteGift"));
        assert!(is_mutating("/ovation.catalog.v1.CatalogService/CreateGift"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(!is_public("/ovation.catalog.v1.CatalogService/GetGift"));
    }

    #[test]
    fn buckets_refill_at_the_rate() {
        let limiter = RateLimiter::new(10, 2);
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert!(limiter.check("a", t0).is_ok());
        let wait = limiter.check("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(
            limiter.check("b", t0).is_ok(),
            "callers have their own buckets"
        );
        assert!(limiter.check("a", t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc.def.ghi"));
        headers.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
