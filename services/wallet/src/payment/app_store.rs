//! Apple App Store in-app purchases (StoreKit 2).
//!
//! Apple has taken the money before the wallet hears of it: there is no charge. The app
//! hands the wallet the JWS signed transaction StoreKit gave it; the wallet verifies it
//! ([`ovation_webhooks::app_store_jws`]: ES256, the `x5c` chain to a configured Apple root,
//! at the wallet's now) and then checks what it says:
//! - `bundleId` is this app's (`OVATION_APP_STORE_BUNDLE_ID`);
//! - `environment` is the configured one (`Production` or `Sandbox`);
//! - `type` is `Consumable` (coins are consumed);
//! - `revocationDate` is absent (not refunded or revoked already);
//! - `productId` maps to a coin package (`OVATION_APP_STORE_PRODUCTS`).
//!
//! The transaction is then recorded as a COMPLETED purchase whose provider reference is its
//! `transactionId`; a unique index makes one transaction credit once across all users.
//! Refunds and revocations arrive as App Store Server Notifications v2 (`REFUND`, `REVOKE`).

use std::collections::HashMap;
use std::path::PathBuf;

use ovation_server::StartError;
use ovation_types::ResourceId;
use ovation_webhooks::app_store_jws::{self, AppleRoots};
use serde_json::Value;

/// The App Store settings.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AppStoreArgs {
    /// Apple's root certificates (PEM, or one DER `.cer` as Apple publishes Apple Root CA -
    /// G3) that signed transactions and notifications must chain to.
    #[arg(
        id = "app_store_root_certs_file",
        long = "app-store-root-certs-file",
        env = "OVATION_APP_STORE_ROOT_CERTS_FILE"
    )]
    pub root_certs_file: Option<PathBuf>,
    /// The app's bundle id; a transaction of another app is refused.
    #[arg(
        id = "app_store_bundle_id",
        long = "app-store-bundle-id",
        env = "OVATION_APP_STORE_BUNDLE_ID"
    )]
    pub bundle_id: Option<String>,
    /// `Production` or `Sandbox` (no default): transactions of the other environment are
    /// refused.
    #[arg(
        id = "app_store_environment",
        long = "app-store-environment",
        env = "OVATION_APP_STORE_ENVIRONMENT"
    )]
    pub environment: Option<String>,
    /// Comma-separated `productId=package_id` pairs: which coin package each App Store
    /// product buys (e.g. `com.example.coins100=coins_100`).
    #[arg(
        id = "app_store_products",
        long = "app-store-products",
        env = "OVATION_APP_STORE_PRODUCTS",
        value_delimiter = ','
    )]
    pub products: Vec<String>,
}

/// Apple's two environments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Production,
    Sandbox,
}

impl Environment {
    pub fn parse(s: &str) -> Option<Environment> {
        match s {
            "Production" => Some(Environment::Production),
            "Sandbox" => Some(Environment::Sandbox),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Environment::Production => "Production",
            Environment::Sandbox => "Sandbox",
        }
    }
}

/// What the wallet trusts and expects of App Store data.
#[derive(Clone, Debug)]
pub struct AppStore {
    roots: AppleRoots,
    bundle_id: String,
    environment: Environment,
    /// productId → coin package id.
    products: HashMap<String, ResourceId>,
}

/// A verified, checked App Store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStoreTransaction {
    pub transaction_id: String,
    pub product_id: String,
    pub package_id: ResourceId,
    /// `price` (milli-units of `currency`) and `currency`, when the transaction carries them.
    pub price_milli: Option<(i64, String)>,
    /// The app's token for the buyer (`appAccountToken`), empty if none.
    pub app_account_token: String,
}

/// A verified App Store Server Notification (v2), as far as the wallet reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStoreNotification {
    pub notification_uuid: String,
    pub notification_type: String,
    /// The `transactionId` of `data.signedTransactionInfo` (itself verified), empty if none.
    pub transaction_id: String,
}

/// The longest notification UUID accepted (Apple's are 36 characters).
pub const NOTIFICATION_UUID_BYTES_MAX: usize = 64;

/// The longest transaction id accepted (Apple's are ~16 digits).
pub const TRANSACTION_ID_BYTES_MAX: usize = 64;

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

impl AppStore {
    pub fn new(
        roots: AppleRoots,
        bundle_id: impl Into<String>,
        environment: Environment,
        products: HashMap<String, ResourceId>,
    ) -> AppStore {
        AppStore {
            roots,
            bundle_id: bundle_id.into(),
            environment,
            products,
        }
    }

    /// The App Store the settings describe; every setting is required.
    pub fn from_args(args: &AppStoreArgs) -> Result<AppStore, StartError> {
        let missing = |setting: &str, what: &str| {
            StartError::Config(format!(
                "the payment provider `app_store` needs {setting} ({what})"
            ))
        };
        let path = args.root_certs_file.as_ref().ok_or_else(|| {
            missing(
                "OVATION_APP_STORE_ROOT_CERTS_FILE",
                "Apple's root certificates",
            )
        })?;
        let roots = AppleRoots::from_file(path)
            .map_err(|e| StartError::Config(format!("OVATION_APP_STORE_ROOT_CERTS_FILE: {e}")))?;
        let bundle_id = args
            .bundle_id
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| missing("OVATION_APP_STORE_BUNDLE_ID", "the app's bundle id"))?;
        let environment_name = args
            .environment
            .as_deref()
            .map(str::trim)
            .ok_or_else(|| missing("OVATION_APP_STORE_ENVIRONMENT", "Production or Sandbox"))?;
        let environment = Environment::parse(environment_name).ok_or_else(|| {
            StartError::Config(format!(
                "OVATION_APP_STORE_ENVIRONMENT: {environment_name:?} is neither Production nor \
                 Sandbox"
            ))
        })?;
        let products = parse_products(&args.products).map_err(StartError::Config)?;
        Ok(AppStore::new(roots, bundle_id, environment, products))
    }

    /// Verifies a signed transaction at `at_unix_secs` and checks it is a redeemable
    /// purchase of this app's coins. The error says why not, for the client.
    pub fn transaction(
        &self,
        signed_transaction: &str,
        at_unix_secs: i64,
    ) -> Result<AppStoreTransaction, String> {
        let payload = self.verify(signed_transaction, at_unix_secs)?;
        self.check_transaction(&payload)
    }

    /// Verifies any App Store signed value (a transaction, a notification) at `at_unix_secs`.
    pub fn verify(&self, jws: &str, at_unix_secs: i64) -> Result<Value, String> {
        app_store_jws::verify(jws, &self.roots, at_unix_secs)
            .map_err(|e| format!("not signed by the App Store: {e}"))
    }

    /// The environment notifications and transactions must come from.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The bundle id notifications and transactions must be for.
    pub fn bundle_id(&self) -> &str {
        &self.bundle_id
    }

    /// Verifies a notification's body (`{"signedPayload": JWS}`) at `at_unix_secs`: the
    /// payload and its `data.signedTransactionInfo` both signed by the App Store, for this
    /// app's bundle and environment.
    pub fn notification(
        &self,
        body: &[u8],
        at_unix_secs: i64,
    ) -> Result<AppStoreNotification, String> {
        let envelope: Value =
            serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
        let signed = text(&envelope, "signedPayload");
        let payload = self.verify(signed, at_unix_secs)?;
        let uuid = text(&payload, "notificationUUID");
        if uuid.is_empty() || uuid.len() > NOTIFICATION_UUID_BYTES_MAX {
            return Err("the notification has no valid notificationUUID".into());
        }
        let data = payload.get("data").unwrap_or(&Value::Null);
        let bundle_id = text(data, "bundleId");
        if bundle_id != self.bundle_id {
            return Err(format!("the notification is for bundle {bundle_id:?}"));
        }
        let environment = text(data, "environment");
        if environment != self.environment.name() {
            return Err(format!(
                "the notification is from the {environment:?} environment"
            ));
        }
        let transaction_id = match text(data, "signedTransactionInfo") {
            "" => String::new(),
            signed_transaction => {
                let transaction = self.verify(signed_transaction, at_unix_secs)?;
                if text(&transaction, "bundleId") != self.bundle_id {
                    return Err("the notification's transaction is another app's".into());
                }
                text(&transaction, "transactionId").to_owned()
            }
        };
        Ok(AppStoreNotification {
            notification_uuid: uuid.to_owned(),
            notification_type: text(&payload, "notificationType").to_owned(),
            transaction_id,
        })
    }

    fn check_transaction(&self, t: &Value) -> Result<AppStoreTransaction, String> {
        let transaction_id = text(t, "transactionId");
        if transaction_id.is_empty()
            || transaction_id.len() > TRANSACTION_ID_BYTES_MAX
            || !transaction_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("the transaction has no valid transactionId".into());
        }
        let bundle_id = text(t, "bundleId");
        if bundle_id != self.bundle_id {
            return Err(format!(
                "the transaction is for bundle {bundle_id:?}, not this app's"
            ));
        }
        let environment = text(t, "environment");
        if environment != self.environment.name() {
            return Err(format!(
                "the transaction is from the {environment:?} environment, not {}",
                self.environment.name()
            ));
        }
        let kind = text(t, "type");
        if kind != "Consumable" {
            return Err(format!(
                "the transaction is of type {kind:?}; coins are Consumable products"
            ));
        }
        if t.get("revocationDate").is_some_and(|d| !d.is_null()) {
            return Err("the transaction was refunded or revoked".into());
        }
        let product_id = text(t, "productId");
        let package_id = self
            .products
            .get(product_id)
            .cloned()
            .ok_or_else(|| format!("the product {product_id:?} buys no coin package here"))?;
        let price_milli = match (t.get("price").and_then(Value::as_i64), text(t, "currency")) {
            (Some(price), currency) if price >= 0 && !currency.is_empty() => {
                Some((price, currency.to_owned()))
            }
            _ => None,
        };
        Ok(AppStoreTransaction {
            transaction_id: transaction_id.to_owned(),
            product_id: product_id.to_owned(),
            package_id,
            price_milli,
            app_account_token: text(t, "appAccountToken").to_owned(),
        })
    }
}

/// `productId=package_id` pairs; at least one, each product once.
pub fn parse_products(pairs: &[String]) -> Result<HashMap<String, ResourceId>, String> {
    let mut products = HashMap::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (product, package) = pair.split_once('=').ok_or_else(|| {
            format!("OVATION_APP_STORE_PRODUCTS: {pair:?} is not productId=package_id")
        })?;
        let package = ResourceId::parse(package.trim())
            .map_err(|e| format!("OVATION_APP_STORE_PRODUCTS: {pair:?}: package id: {e}"))?;
        let product = product.trim();
        if product.is_empty() {
            return Err(format!(
                "OVATION_APP_STORE_PRODUCTS: {pair:?} names no product"
            ));
        }
        if products.insert(product.to_owned(), package).is_some() {
            return Err(format!(
                "OVATION_APP_STORE_PRODUCTS: product {product:?} is named twice"
            ));
        }
    }
    if products.is_empty() {
        return Err(
            "the payment provider `app_store` needs OVATION_APP_STORE_PRODUCTS \
             (productId=package_id, comma-separated)"
                .into(),
        );
    }
    Ok(products)
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217), for the
/// currencies that do not have two.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Apple's `price` (thousandths of the currency unit) in the currency's minor units,
/// rounded down; `None` if it does not fit.
pub fn milli_to_minor(price_milli: i64, currency: &str) -> Option<i64> {
    let divisor = 10i64.checked_pow(3 - minor_unit_digits(currency))?;
    price_milli.checked_div(divisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_convert_from_milli_units() {
        assert_eq!(milli_to_minor(1990, "USD"), Some(199));
        assert_eq!(milli_to_minor(160_000, "JPY"), Some(160));
        assert_eq!(milli_to_minor(1_234, "KWD"), Some(1_234));
    }

    #[test]
    fn every_setting_is_required_and_the_environment_has_no_default() {
        let chain = ovation_webhooks::app_store_jws::testing::TestChain::new(true);
        let roots = std::env::temp_dir().join(format!("apple-root-{}.cer", std::process::id()));
        std::fs::write(&roots, &chain.root_der).unwrap();
        let complete = AppStoreArgs {
            root_certs_file: Some(roots.clone()),
            bundle_id: Some("dev.ovation.app".into()),
            environment: Some("Sandbox".into()),
            products: vec!["p=coins_100".into()],
        };
        let built = AppStore::from_args(&complete).expect("builds");
        assert_eq!(built.environment(), Environment::Sandbox);
        let refusal = |args: AppStoreArgs| AppStore::from_args(&args).unwrap_err().to_string();
        for (setting, args) in [
            (
                "OVATION_APP_STORE_BUNDLE_ID",
                AppStoreArgs {
                    bundle_id: None,
                    ..complete.clone()
                },
            ),
            (
                "OVATION_APP_STORE_ENVIRONMENT",
                AppStoreArgs {
                    environment: None,
                    ..complete.clone()
                },
            ),
            (
                "OVATION_APP_STORE_ENVIRONMENT",
                AppStoreArgs {
                    environment: Some("production".into()),
                    ..complete.clone()
                },
            ),
            (
                "OVATION_APP_STORE_PRODUCTS",
                AppStoreArgs {
                    products: vec![],
                    ..complete.clone()
                },
            ),
        ] {
            let refused = refusal(args);
            assert!(refused.contains(setting), "{refused}");
        }
        std::fs::remove_file(roots).ok();
    }

    #[test]
    fn products_parse_and_refuse_what_is_wrong() {
        let products =
            parse_products(&["com.x.coins100=coins_100".into(), " b = coins_500 ".into()]).unwrap();
        assert_eq!(products["com.x.coins100"].as_str(), "coins_100");
        assert_eq!(products["b"].as_str(), "coins_500");
        assert!(parse_products(&[]).is_err());
        assert!(parse_products(&["nopackage".into()]).is_err());
        assert!(parse_products(&["a=x".into(), "a=y".into()]).is_err());
        assert!(parse_products(&["=coins_100".into()]).is_err());
    }
}
