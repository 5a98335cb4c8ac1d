//! Payment providers: the trait each one plugs in behind, the registry built from the
//! settings (`OVATION_PAYMENT_PROVIDERS`), and the providers themselves
//! ([`sandbox`], [`stripe`], [`app_store`]).
//!
//! A provider must be idempotent by purchase id: charging the same purchase id twice
//! charges once and answers the same. The wallet relies on it to retry a charge whose
//! answer was lost without charging twice.

pub mod app_store;
pub mod sandbox;
pub mod stripe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use ovation_server::StartError;
use ovation_server::sandbox::{SandboxArgs, refuse_unless_allowed};
use ovation_webhooks::stripe_signature::{Secrets, Verifier};

use crate::domain::{NextAction, PaymentProviderKind};

pub use sandbox::{SandboxProvider, TOKEN_DECLINE, TOKEN_LOST, TOKEN_OK, TOKEN_TRANSIENT};

/// One charge to make.
#[derive(Clone, Debug)]
pub struct ChargeRequest {
    /// The idempotency reference: one purchase, at most one charge.
    pub purchase_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    /// What the client gave to pay with: a sandbox token, a Stripe `pm_…` id.
    pub payment_token: String,
    /// The provider's id for this purchase's charge from an earlier attempt (a Stripe
    /// PaymentIntent waiting for the customer), to look it up instead of charging anew.
    pub provider_reference: Option<String>,
}

/// What a provider answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Money taken; `reference` is the provider's id for the charge.
    Charged { reference: String },
    /// Definitely not charged.
    Declined { reason: String },
    /// Not charged yet: the customer must act first (3-D Secure). `reference` is the
    /// provider's id for the charge; the provider's webhook (or a later look-up) settles it.
    NeedsAction {
        reference: String,
        action: NextAction,
    },
    /// Not known (timeout, lost answer, provider error): retry with the same purchase id.
    Unknown { detail: String },
}

/// A payment provider.
pub trait PaymentProvider: Send + Sync + std::fmt::Debug + 'static {
    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, ChargeOutcome>;
}

/// The providers this wallet takes payments with.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    by_kind: HashMap<PaymentProviderKind, Arc<dyn PaymentProvider>>,
    /// Stripe's webhook signing secrets, when Stripe is configured.
    stripe_webhook: Option<Verifier>,
    /// The App Store, when configured: its purchases are redeemed, not charged.
    app_store: Option<Arc<app_store::AppStore>>,
}

impl Providers {
    /// No provider: every purchase is refused (PAYMENT_PROVIDER_NOT_CONFIGURED).
    pub fn none() -> Providers {
        Providers::default()
    }

    /// Only the sandbox (development and tests).
    pub fn sandbox(provider: Arc<dyn PaymentProvider>) -> Providers {
        Providers::none().with(PaymentProviderKind::Sandbox, provider)
    }

    pub fn with(mut self, kind: PaymentProviderKind, provider: Arc<dyn PaymentProvider>) -> Self {
        self.by_kind.insert(kind, provider);
        self
    }

    /// Stripe's webhooks are verified with `verifier`.
    pub fn with_stripe_webhook(mut self, verifier: Verifier) -> Self {
        self.stripe_webhook = Some(verifier);
        self
    }

    /// App Store purchases are redeemed (and its notifications verified) with `app_store`.
    pub fn with_app_store(mut self, app_store: app_store::AppStore) -> Self {
        self.app_store = Some(Arc::new(app_store));
        self
    }

    pub fn app_store(&self) -> Option<&Arc<app_store::AppStore>> {
        self.app_store.as_ref()
    }

    pub fn get(&self, kind: PaymentProviderKind) -> Option<&Arc<dyn PaymentProvider>> {
        self.by_kind.get(&kind)
    }

    pub fn stripe_webhook(&self) -> Option<&Verifier> {
        self.stripe_webhook.as_ref()
    }

    /// The configured providers' names, for the start-up log.
    pub fn names(&self) -> Vec<&'static str> {
        PaymentProviderKind::ALL
            .into_iter()
            .filter(|kind| {
                self.by_kind.contains_key(kind)
                    || (*kind == PaymentProviderKind::AppStore && self.app_store.is_some())
            })
            .map(PaymentProviderKind::name)
            .collect()
    }
}

/// The payment settings.
#[derive(clap::Args, Clone, Debug)]
pub struct PaymentArgs {
    /// Comma-separated providers to take payments with: sandbox, stripe, app_store
    /// (google_play is named by the contract but not built yet: naming it refuses to
    /// start). The sandbox needs OVATION_ALLOW_SANDBOX=true.
    #[arg(
        long,
        env = "OVATION_PAYMENT_PROVIDERS",
        default_value = "sandbox",
        value_delimiter = ','
    )]
    pub payment_providers: Vec<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub stripe: stripe::StripeArgs,
    #[command(flatten)]
    pub app_store: app_store::AppStoreArgs,
    /// Where the provider webhook endpoint listens (POST /webhooks/stripe,
    /// /webhooks/app_store); unset: none.
    #[arg(long, env = "OVATION_WALLET_WEBHOOK_ADDR")]
    pub webhook_addr: Option<std::net::SocketAddr>,
}

impl PaymentArgs {
    /// The settings `ovation up` runs with: the sandbox, allowed.
    pub fn development_sandbox() -> PaymentArgs {
        PaymentArgs {
            payment_providers: vec![PaymentProviderKind::Sandbox.name().to_owned()],
            sandbox: SandboxArgs {
                allow_sandbox: true,
            },
            stripe: stripe::StripeArgs::default(),
            app_store: app_store::AppStoreArgs::default(),
            webhook_addr: None,
        }
    }
}

/// Builds the providers the settings name, refusing what cannot run: an unknown name, a
/// provider not built yet, the sandbox without OVATION_ALLOW_SANDBOX, Stripe without its
/// secret key or webhook secrets.
pub fn build(args: &PaymentArgs) -> Result<Providers, StartError> {
    let mut providers = Providers::none();
    let names: Vec<&str> = args
        .payment_providers
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err(StartError::Config(
            "OVATION_PAYMENT_PROVIDERS names no provider (any of sandbox, stripe, app_store)"
                .into(),
        ));
    }
    for name in names {
        let kind = PaymentProviderKind::parse(name).ok_or_else(|| {
            StartError::Config(format!(
                "OVATION_PAYMENT_PROVIDERS: unknown provider {name:?} (any of sandbox, stripe, \
                 app_store, google_play)"
            ))
        })?;
        match kind {
            PaymentProviderKind::Sandbox => {
                refuse_unless_allowed(
                    "the payment provider `sandbox` (OVATION_PAYMENT_PROVIDERS)",
                    args.sandbox.allow_sandbox,
                )?;
                providers = providers.with(kind, Arc::new(SandboxProvider::new()));
            }
            PaymentProviderKind::Stripe => {
                let client = stripe::StripeProvider::from_args(&args.stripe)?;
                let secrets = read_secrets(
                    "OVATION_STRIPE_WEBHOOK_SECRETS_FILE",
                    args.stripe.webhook_secrets_file.as_ref(),
                )?;
                providers = providers.with(kind, Arc::new(client)).with_stripe_webhook(
                    Verifier::new(secrets).with_tolerance_secs(args.stripe.webhook_tolerance_secs),
                );
            }
            PaymentProviderKind::AppStore => {
                providers =
                    providers.with_app_store(app_store::AppStore::from_args(&args.app_store)?);
            }
            PaymentProviderKind::GooglePlay => {
                return Err(StartError::Config(format!(
                    "OVATION_PAYMENT_PROVIDERS: the provider `{name}` is not built yet; \
                     configure sandbox, stripe or app_store"
                )));
            }
        }
    }
    Ok(providers)
}

fn read_secrets(setting: &str, path: Option<&PathBuf>) -> Result<Secrets, StartError> {
    let path = path.ok_or_else(|| {
        StartError::Config(format!(
            "the payment provider `stripe` needs {setting} (its webhook signing secrets, one \
             per line)"
        ))
    })?;
    Secrets::from_file(path).map_err(|e| StartError::Config(format!("{setting}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(providers: &[&str], allow_sandbox: bool) -> PaymentArgs {
        PaymentArgs {
            payment_providers: providers.iter().map(|s| s.to_string()).collect(),
            sandbox: SandboxArgs { allow_sandbox },
            stripe: stripe::StripeArgs::default(),
            app_store: app_store::AppStoreArgs::default(),
            webhook_addr: None,
        }
    }

    #[test]
    fn the_sandbox_runs_only_where_allowed() {
        let refused = build(&args(&["sandbox"], false)).unwrap_err().to_string();
        assert!(refused.contains("OVATION_ALLOW_SANDBOX"), "{refused}");
        let built = build(&args(&["sandbox"], true)).unwrap();
        assert_eq!(built.names(), ["sandbox"]);
    }

    #[test]
    fn providers_not_built_or_unknown_refuse_to_start() {
        let refused = build(&args(&["google_play"], true))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("not built yet"), "{refused}");
        let unknown = build(&args(&["paypal"], true)).unwrap_err().to_string();
        assert!(unknown.contains("unknown provider"), "{unknown}");
        assert!(build(&args(&[" "], true)).is_err());
    }

    #[test]
    fn the_app_store_needs_its_roots_bundle_environment_and_products() {
        let refused = build(&args(&["app_store"], false)).unwrap_err().to_string();
        assert!(
            refused.contains("OVATION_APP_STORE_ROOT_CERTS_FILE"),
            "{refused}"
        );
    }

    #[test]
    fn stripe_needs_its_secret_key_and_webhook_secrets() {
        let refused = build(&args(&["stripe"], false)).unwrap_err().to_string();
        assert!(
            refused.contains("OVATION_STRIPE_SECRET_KEY_FILE"),
            "{refused}"
        );
    }
}
