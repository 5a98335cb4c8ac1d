//! Buying coins, crash-safely.
//!
//! 1. The purchase is priced (catalog) and recorded PENDING, with everything needed to
//!    charge it, in its own transaction — before any money moves.
//! 2. A charge attempt is claimed (a lease on the row), the provider is called with the
//!    purchase id as its idempotency reference, and the outcome is written: COMPLETED
//!    (coins credited in the same transaction), DECLINED, or still PENDING with a retry
//!    time when the outcome is unknown.
//! 3. A recovery worker retries PENDING purchases whose lease or retry time has passed —
//!    including those of a process that died between charge and credit. The provider's
//!    idempotency makes the retry answer "charged" without charging again, and the
//!    conditional PENDING → COMPLETED transition credits once.

use std::sync::Arc;
use std::time::Duration;

use ovation_proto::reasons;
use ovation_store::Db;
use ovation_types::{Clock, Coins, CurrencyCode, IdempotencyKey, Money, ResourceId, UnixMillis};

use crate::catalog::{CatalogError, CatalogReader};
use crate::domain::{
    AgeRule, PaymentMethod, PaymentProviderKind, PromotionOffer, PurchaseState, PurchaseVelocity,
    Refusal, VELOCITY_WINDOW_MS, VerifiedAge, check_caps, choose_promotion,
};
use crate::ledger::{self, WalletError};
use crate::payment::{ChargeOutcome, ChargeRequest, Providers, app_store};
use crate::store::{self, PurchaseRow};

/// Timing and budgets of purchases.
#[derive(Clone, Debug)]
pub struct PurchaseSettings {
    /// Longest one charge call may take before its outcome counts as unknown.
    pub charge_timeout_ms: u64,
    /// First retry delay of an unknown outcome; doubles per attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// After this many attempts a purchase is left PENDING for an operator (logged).
    pub charge_attempts_max: i64,
    /// How often the recovery worker looks for due purchases and expired holds.
    pub recovery_interval_ms: u64,
    /// Who may buy.
    pub age_rule: AgeRule,
    /// Per-buyer purchase velocity limits (last hour).
    pub velocity: PurchaseVelocity,
    /// While a charge waits for its customer (3-D Secure), how long until the wallet looks
    /// at it again (the provider's webhook usually settles it first).
    pub action_recheck_ms: u64,
    /// Where purchases read the time (recording, caps, velocity windows).
    pub clock: Clock,
}

impl Default for PurchaseSettings {
    fn default() -> Self {
        PurchaseSettings {
            charge_timeout_ms: 3_000,
            retry_base_ms: 200,
            retry_max_ms: 60_000,
            charge_attempts_max: 100,
            recovery_interval_ms: 500,
            age_rule: AgeRule::default(),
            velocity: PurchaseVelocity::default(),
            action_recheck_ms: 60_000,
            clock: Clock::system(),
        }
    }
}

/// Most purchases one recovery pass retries; most holds it expires.
const RECOVERY_BATCH_MAX: i64 = 64;

/// A new purchase's id: "pur_" and a time-ordered UUID's 32 hex digits.
fn new_purchase_id() -> ResourceId {
    ResourceId::parse(&format!("pur_{}", uuid::Uuid::now_v7().simple()))
        .expect("36 letters, digits and _ make a valid id")
}

/// A purchase request, validated.
#[derive(Clone, Debug)]
pub struct PurchaseCmd {
    pub idempotency_key: IdempotencyKey,
    /// The request's fingerprint: a retry under the same key must repeat it.
    pub fingerprint: String,
    pub user_id: ResourceId,
    pub package_id: ResourceId,
    pub currency: CurrencyCode,
    /// How the viewer pays.
    pub payment: PaymentMethod,
    pub expected_price: Option<Money>,
    /// The buyer's age as their token vouches for it (identity provider or gateway).
    pub verified_age: Option<VerifiedAge>,
}

/// Buys coins: pricing, recording, charging, crediting, recovering.
#[derive(Clone, Debug)]
pub struct Purchases {
    db: Db,
    catalog: CatalogReader,
    providers: Arc<Providers>,
    settings: PurchaseSettings,
}

impl Purchases {
    pub fn new(
        db: Db,
        catalog: CatalogReader,
        providers: Arc<Providers>,
        settings: PurchaseSettings,
    ) -> Self {
        Purchases {
            db,
            catalog,
            providers,
            settings,
        }
    }

    /// PurchaseCoins: the purchase in its state after one charge attempt.
    pub async fn purchase(&self, cmd: PurchaseCmd) -> Result<PurchaseRow, WalletError> {
        if let Some(existing) = self.by_key(&cmd).await? {
            return Ok(existing);
        }
        if let PaymentMethod::AppStore { signed_transaction } = &cmd.payment {
            return self.redeem_app_store(&cmd, signed_transaction).await;
        }
        let provider = cmd.payment.provider();
        let credential = match (
            self.providers.get(provider),
            cmd.payment.charge_credential(),
        ) {
            (Some(_), Some(credential)) => credential.to_owned(),
            _ => {
                return Err(WalletError::WrongState {
                    reason: reasons::wallet::PAYMENT_PROVIDER_NOT_CONFIGURED,
                    message: format!(
                        "this wallet takes no payments through {} (OVATION_PAYMENT_PROVIDERS)",
                        provider.name()
                    ),
                });
            }
        };
        if let Some(age) = cmd.verified_age {
            // Recorded first and on its own: a verified minor stays recorded though this
            // purchase is refused, and the gift saga's debits are judged by it.
            let mut tx = self.db.begin_write().await?;
            ledger::record_verified_age(&mut tx, &cmd.user_id, age, UnixMillis::now()).await?;
            tx.commit().await.map_err(ovation_store::StoreError::from)?;
        }
        let offer = self
            .catalog
            .offer(cmd.package_id.as_str())
            .await
            .map_err(|e| match e {
                CatalogError::PackageNotFound(id) => WalletError::NotFound {
                    kind: "coin package",
                    id,
                },
                CatalogError::Unavailable(detail) => {
                    WalletError::Unavailable(format!("catalog: {detail}"))
                }
            })?;
        if !offer.enabled {
            return Err(WalletError::WrongState {
                reason: reasons::wallet::PACKAGE_UNAVAILABLE,
                message: format!("coin package {} is not on sale", cmd.package_id),
            });
        }
        let amount_minor = offer
            .prices
            .iter()
            .find(|(currency, _)| currency.as_str() == cmd.currency.as_str())
            .map(|(_, amount)| *amount)
            .ok_or_else(|| WalletError::WrongState {
                reason: reasons::wallet::PACKAGE_UNAVAILABLE,
                message: format!(
                    "coin package {} is not sold in {}",
                    cmd.package_id, cmd.currency
                ),
            })?;
        if let Some(expected) = &cmd.expected_price
            && (expected.currency != cmd.currency || expected.amount_minor() != amount_minor)
        {
            return Err(WalletError::WrongState {
                reason: reasons::wallet::PRICE_CHANGED,
                message: format!(
                    "the price is now {amount_minor} {} minor units, not the expected {} {}",
                    cmd.currency,
                    expected.amount_minor(),
                    expected.currency
                ),
            });
        }
        let package_coins = Coins::parse(offer.coins).map_err(|e| WalletError::WrongState {
            reason: reasons::wallet::PACKAGE_UNAVAILABLE,
            message: format!(
                "coin package {} has an invalid coin amount: {e}",
                cmd.package_id
            ),
        })?;

        let now = self.settings.clock.now();
        let mut tx = self.db.begin_write().await?;
        let user = cmd.user_id.as_str();
        let account = ledger::lock_account(&mut tx, user, now).await?;
        // A twin under the same key that committed while this one waited for the lock is
        // answered as the original, never counted against the velocity limits.
        if store::get_purchase_by_key(&mut tx, user, cmd.idempotency_key.as_str())
            .await?
            .is_some()
        {
            drop(tx);
            return self.by_key(&cmd).await?.ok_or_else(|| {
                WalletError::Conflict("concurrent purchase vanished; retry".into())
            });
        }
        self.settings.age_rule.check(user, account.age)?;
        // Under the buyer's lock: concurrent purchases of one buyer are counted one after
        // the other, so together they cannot slip past a limit.
        let recent = store::recent_purchases(
            &mut tx,
            user,
            cmd.currency.as_str(),
            UnixMillis(now.0.saturating_sub(VELOCITY_WINDOW_MS)),
        )
        .await?;
        if let Err(refusal) = self
            .settings
            .velocity
            .check(recent, &cmd.currency, amount_minor)
        {
            if let Refusal::Velocity { limit, .. } = &refusal {
                ovation_metrics::global().velocity_limit_refused(limit.name());
            }
            return Err(refusal.into());
        }
        let caps = store::get_limits(&mut tx, user).await?.at(now).effective;
        if caps.daily_purchase.is_some() || caps.monthly_purchase.is_some() {
            let usage = store::usage(&mut tx, user, now, true).await?;
            check_caps(
                caps.daily_purchase,
                caps.monthly_purchase,
                usage,
                package_coins.get(),
                true,
            )?;
        }
        let mut offers = Vec::new();
        for p in offer
            .promotions
            .iter()
            .filter(|p| p.starts_at <= now && now < p.ends_at)
        {
            offers.push(PromotionOffer {
                id: p.id.clone(),
                version: p.version,
                bonus_bps: p.bonus_bps,
                per_user_cap: p.per_user_cap,
                used_by_user: store::promotion_uses(&mut tx, user, &p.id).await?,
            });
        }
        let chosen = choose_promotion(package_coins, &offers);
        let row = PurchaseRow {
            purchase_id: new_purchase_id(),
            idempotency_key: cmd.idempotency_key.clone(),
            fingerprint: cmd.fingerprint.clone(),
            user_id: cmd.user_id.clone(),
            // The package the buyer named: the catalog answered for that id.
            package_id: cmd.package_id.clone(),
            package_version: offer.version,
            currency_code: cmd.currency,
            amount_minor,
            package_coins,
            bonus_coins: chosen.as_ref().map_or(0, |(_, bonus)| *bonus),
            promotion_id: chosen.as_ref().map_or(String::new(), |(o, _)| o.id.clone()),
            promotion_version: chosen.as_ref().map_or(0, |(o, _)| o.version),
            payment_token: credential,
            state: PurchaseState::Pending,
            decline_reason: String::new(),
            provider_reference: String::new(),
            charge_attempts: 0,
            // Leased to this request's first attempt; recovery takes over after that.
            next_attempt_at: self.lease_end(now),
            reversal_actor: String::new(),
            reversal_reason: String::new(),
            reversal_clawed_back: 0,
            reversal_debt: 0,
            reversed_at: None,
            created_at: now,
            updated_at: now,
            credited_seq: None,
            attribution: store::AttributionRow::default(),
            payment_provider: provider,
            next_action: Default::default(),
        };
        if !store::insert_purchase(&mut tx, &row).await? {
            // A concurrent request with the same key recorded it first: answer as it does.
            drop(tx);
            return self.by_key(&cmd).await?.ok_or_else(|| {
                WalletError::Conflict("concurrent purchase vanished; retry".into())
            });
        }
        tx.commit().await.map_err(ovation_store::StoreError::from)?;
        self.attempt(row).await
    }

    /// An App Store purchase: Apple took the money already, so there is no charge. The
    /// signed transaction is verified and checked, then recorded COMPLETED and credited in
    /// one transaction, once per `transactionId` across all users (a unique index on the
    /// provider reference). No promotion bonus, velocity limit or purchase cap applies (the
    /// buyer has paid; refusing would keep their money without coins); the age rule does.
    async fn redeem_app_store(
        &self,
        cmd: &PurchaseCmd,
        signed_transaction: &str,
    ) -> Result<PurchaseRow, WalletError> {
        const FIELD: &str = "payment_method.app_store.signed_transaction";
        let Some(app_store) = self.providers.app_store() else {
            return Err(WalletError::WrongState {
                reason: reasons::wallet::PAYMENT_PROVIDER_NOT_CONFIGURED,
                message: "this wallet takes no payments through app_store \
                          (OVATION_PAYMENT_PROVIDERS)"
                    .into(),
            });
        };
        let now = self.settings.clock.now();
        let transaction = app_store
            .transaction(signed_transaction, now.0.div_euclid(1000))
            .map_err(|message| WalletError::Invalid {
                field: FIELD,
                message,
            })?;
        if transaction.package_id != cmd.package_id {
            return Err(WalletError::Invalid {
                field: "package_id",
                message: format!(
                    "the App Store product {} buys coin package {}, not {}",
                    transaction.product_id, transaction.package_id, cmd.package_id
                ),
            });
        }
        if let Some(age) = cmd.verified_age {
            let mut tx = self.db.begin_write().await?;
            ledger::record_verified_age(&mut tx, &cmd.user_id, age, now).await?;
            tx.commit().await.map_err(ovation_store::StoreError::from)?;
        }
        let offer = self
            .catalog
            .offer(cmd.package_id.as_str())
            .await
            .map_err(|e| match e {
                CatalogError::PackageNotFound(id) => WalletError::NotFound {
                    kind: "coin package",
                    id,
                },
                CatalogError::Unavailable(detail) => {
                    WalletError::Unavailable(format!("catalog: {detail}"))
                }
            })?;
        // What the buyer paid, as Apple reports it; else the package's price.
        let (currency, amount_minor) = match &transaction.price_milli {
            Some((price, currency)) => {
                let code = CurrencyCode::parse(currency).map_err(|e| WalletError::Invalid {
                    field: FIELD,
                    message: format!("the transaction's currency: {e}"),
                })?;
                let amount = app_store::milli_to_minor(*price, code.as_str()).ok_or_else(|| {
                    WalletError::Invalid {
                        field: FIELD,
                        message: "the transaction's price does not fit".into(),
                    }
                })?;
                (code, amount)
            }
            None => {
                let amount = offer
                    .prices
                    .iter()
                    .find(|(c, _)| c.as_str() == cmd.currency.as_str())
                    .map(|(_, amount)| *amount)
                    .ok_or_else(|| WalletError::WrongState {
                        reason: reasons::wallet::PACKAGE_UNAVAILABLE,
                        message: format!(
                            "the transaction carries no price and coin package {} is not sold \
                             in {}",
                            cmd.package_id, cmd.currency
                        ),
                    })?;
                (cmd.currency, amount)
            }
        };
        let package_coins = Coins::parse(offer.coins).map_err(|e| WalletError::WrongState {
            reason: reasons::wallet::PACKAGE_UNAVAILABLE,
            message: format!(
                "coin package {} has an invalid coin amount: {e}",
                cmd.package_id
            ),
        })?;
        let row = PurchaseRow {
            purchase_id: new_purchase_id(),
            idempotency_key: cmd.idempotency_key.clone(),
            fingerprint: cmd.fingerprint.clone(),
            user_id: cmd.user_id.clone(),
            package_id: cmd.package_id.clone(),
            package_version: offer.version,
            currency_code: currency,
            amount_minor,
            package_coins,
            bonus_coins: 0,
            promotion_id: String::new(),
            promotion_version: 0,
            // The app's token for the buyer (appAccountToken), kept as the credential.
            payment_token: transaction.app_account_token.clone(),
            state: PurchaseState::Pending,
            decline_reason: String::new(),
            // Unique per provider: the transaction is redeemed once, by whoever is first.
            provider_reference: transaction.transaction_id.clone(),
            charge_attempts: 0,
            next_attempt_at: UnixMillis(i64::MAX),
            reversal_actor: String::new(),
            reversal_reason: String::new(),
            reversal_clawed_back: 0,
            reversal_debt: 0,
            reversed_at: None,
            created_at: now,
            updated_at: now,
            credited_seq: None,
            attribution: store::AttributionRow::default(),
            payment_provider: PaymentProviderKind::AppStore,
            next_action: Default::default(),
        };
        match self.record_redeemed(&row, now).await {
            Ok(true) => self.reload(&row.purchase_id).await,
            // Lost to a twin under the same key, or to anyone under the same transaction.
            Ok(false) => self.answer_redeemed(cmd, &transaction.transaction_id).await,
            Err(e) if e.lost_to_a_twin() => {
                self.answer_redeemed(cmd, &transaction.transaction_id).await
            }
            Err(e) => Err(e),
        }
    }

    /// Records and credits a redeemed App Store purchase; false if its key or its
    /// transaction was recorded first.
    async fn record_redeemed(
        &self,
        row: &PurchaseRow,
        now: UnixMillis,
    ) -> Result<bool, WalletError> {
        let mut tx = self.db.begin_write().await?;
        let user = row.user_id.as_str();
        let account = ledger::lock_account(&mut tx, user, now).await?;
        if store::get_purchase_by_key(&mut tx, user, row.idempotency_key.as_str())
            .await?
            .is_some()
            || store::get_purchase_by_provider_reference(
                &mut tx,
                PaymentProviderKind::AppStore,
                &row.provider_reference,
            )
            .await?
            .is_some()
        {
            return Ok(false);
        }
        self.settings.age_rule.check(user, account.age)?;
        if !store::insert_purchase(&mut tx, row).await? {
            return Ok(false);
        }
        if !ledger::complete_purchase(&mut tx, row, &row.provider_reference, now).await? {
            return Err(WalletError::Inconsistent(format!(
                "purchase {} vanished before its credit",
                row.purchase_id
            )));
        }
        tx.commit().await.map_err(ovation_store::StoreError::from)?;
        tracing::info!(purchase_id = %row.purchase_id, "app store purchase redeemed");
        Ok(true)
    }

    /// The answer to a redemption that found its key or its transaction recorded: the
    /// original purchase to the same buyer under the same key; ALREADY_EXISTS otherwise.
    async fn answer_redeemed(
        &self,
        cmd: &PurchaseCmd,
        transaction_id: &str,
    ) -> Result<PurchaseRow, WalletError> {
        if let Some(existing) = self.by_key(cmd).await? {
            return Ok(existing);
        }
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(ovation_store::StoreError::from)?;
        match store::get_purchase_by_provider_reference(
            &mut conn,
            PaymentProviderKind::AppStore,
            transaction_id,
        )
        .await?
        {
            Some(_) => Err(WalletError::AlreadyRedeemed(format!(
                "App Store transaction {transaction_id} was already redeemed (by this or \
                 another account, under another idempotency key)"
            ))),
            None => Err(WalletError::Conflict(
                "a concurrent purchase vanished; retry".into(),
            )),
        }
    }

    /// The purchase this buyer already recorded under this idempotency key, if any (keys
    /// are per buyer: another user's same key is another purchase): replayed as it
    /// is now (driving it on if it is a PENDING one whose time has come).
    async fn by_key(&self, cmd: &PurchaseCmd) -> Result<Option<PurchaseRow>, WalletError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(ovation_store::StoreError::from)?;
        let Some(existing) = store::get_purchase_by_key(
            &mut conn,
            cmd.user_id.as_str(),
            cmd.idempotency_key.as_str(),
        )
        .await?
        else {
            return Ok(None);
        };
        drop(conn);
        if existing.fingerprint != cmd.fingerprint {
            return Err(ovation_store::StoreError::KeyReused.into());
        }
        if existing.state == PurchaseState::Pending && existing.next_attempt_at <= UnixMillis::now()
        {
            return self.attempt(existing).await.map(Some);
        }
        Ok(Some(existing))
    }

    fn lease_end(&self, now: UnixMillis) -> UnixMillis {
        let lease_ms =
            i64::try_from(self.settings.charge_timeout_ms.saturating_mul(2)).unwrap_or(i64::MAX);
        UnixMillis(now.0.saturating_add(lease_ms))
    }

    /// One charge attempt, if this caller wins the claim on it.
    async fn attempt(&self, purchase: PurchaseRow) -> Result<PurchaseRow, WalletError> {
        let now = UnixMillis::now();
        {
            let mut tx = self.db.begin_write().await?;
            if !store::claim_charge_attempt(
                &mut tx,
                purchase.purchase_id.as_str(),
                purchase.charge_attempts,
                self.lease_end(now),
            )
            .await?
            {
                drop(tx);
                return self.reload(&purchase.purchase_id).await;
            }
            tx.commit().await.map_err(ovation_store::StoreError::from)?;
        }
        let attempts = purchase.charge_attempts + 1;
        let request = ChargeRequest {
            purchase_id: purchase.purchase_id.as_str().to_owned(),
            currency_code: purchase.currency_code.as_str().to_owned(),
            amount_minor: purchase.amount_minor,
            payment_token: purchase.payment_token.clone(),
            provider_reference: Some(purchase.provider_reference.clone()).filter(|r| !r.is_empty()),
        };
        let outcome = match self.providers.get(purchase.payment_provider) {
            // Configured away since it was recorded: kept PENDING until it is back.
            None => ChargeOutcome::Unknown {
                detail: format!(
                    "the payment provider {} is not configured",
                    purchase.payment_provider.name()
                ),
            },
            Some(provider) => match tokio::time::timeout(
                Duration::from_millis(self.settings.charge_timeout_ms),
                provider.charge(&request),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => ChargeOutcome::Unknown {
                    detail: format!("no answer within {} ms", self.settings.charge_timeout_ms),
                },
            },
        };
        let now = UnixMillis::now();
        let mut tx = self.db.begin_write().await?;
        match &outcome {
            ChargeOutcome::Charged { reference } => {
                if ledger::complete_purchase(&mut tx, &purchase, reference, now).await? {
                    tracing::info!(purchase_id = %purchase.purchase_id, "purchase completed");
                }
            }
            ChargeOutcome::Declined { reason } => {
                store::settle_purchase(
                    &mut tx,
                    purchase.purchase_id.as_str(),
                    PurchaseState::Declined,
                    "",
                    reason,
                    now,
                )
                .await?;
            }
            ChargeOutcome::NeedsAction { reference, action } => {
                let wait_ms = i64::try_from(self.settings.action_recheck_ms)
                    .unwrap_or(i64::MAX)
                    .max(self.backoff_ms(attempts));
                let recheck_at = if attempts >= self.settings.charge_attempts_max {
                    tracing::error!(purchase_id = %purchase.purchase_id, attempts,
                        "the customer has not acted within the retry budget; left PENDING for an operator");
                    UnixMillis(i64::MAX)
                } else {
                    UnixMillis(now.0.saturating_add(wait_ms))
                };
                store::await_customer(
                    &mut tx,
                    purchase.purchase_id.as_str(),
                    reference,
                    action,
                    recheck_at,
                    now,
                )
                .await?;
            }
            ChargeOutcome::Unknown { detail } => {
                if attempts >= self.settings.charge_attempts_max {
                    tracing::error!(purchase_id = %purchase.purchase_id, attempts, %detail,
                        "charge outcome still unknown after the retry budget; left PENDING for an operator");
                    store::schedule_retry(
                        &mut tx,
                        purchase.purchase_id.as_str(),
                        UnixMillis(i64::MAX),
                    )
                    .await?;
                } else {
                    let delay = self.backoff_ms(attempts);
                    tracing::warn!(purchase_id = %purchase.purchase_id, attempts, %detail, delay_ms = delay,
                        "charge outcome unknown; will retry with the same purchase id");
                    store::schedule_retry(
                        &mut tx,
                        purchase.purchase_id.as_str(),
                        UnixMillis(now.0.saturating_add(delay)),
                    )
                    .await?;
                }
            }
        }
        tx.commit().await.map_err(ovation_store::StoreError::from)?;
        self.reload(&purchase.purchase_id).await
    }

    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exponent = u32::try_from(attempts.clamp(1, 30) - 1).unwrap_or(0);
        let delay = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.settings.retry_max_ms);
        i64::try_from(delay).unwrap_or(i64::MAX)
    }

    async fn reload(&self, purchase_id: &ResourceId) -> Result<PurchaseRow, WalletError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(ovation_store::StoreError::from)?;
        ledger::purchase(&mut conn, purchase_id).await
    }

    /// One recovery pass: due purchases get a charge attempt; expired holds are released.
    pub async fn recover_once(&self) -> Result<(), WalletError> {
        let now = UnixMillis::now();
        let due = {
            let mut conn = self
                .db
                .pool()
                .acquire()
                .await
                .map_err(ovation_store::StoreError::from)?;
            store::due_purchases(&mut conn, now, RECOVERY_BATCH_MAX).await?
        };
        for purchase in due {
            let id = purchase.purchase_id.clone();
            if let Err(e) = self.attempt(purchase).await {
                tracing::warn!(purchase_id = %id, error = %e, "recovery attempt failed; will retry");
            }
        }
        let mut tx = self.db.begin_write().await?;
        let expired = ledger::expire_holds(&mut tx, now, RECOVERY_BATCH_MAX).await?;
        tx.commit().await.map_err(ovation_store::StoreError::from)?;
        if expired > 0 {
            tracing::info!(expired, "expired holds released");
        }
        Ok(())
    }

    /// Runs recovery passes until shutdown.
    pub async fn run_recovery(self, shutdown: ovation_server::Shutdown) {
        let interval = Duration::from_millis(self.settings.recovery_interval_ms.max(10));
        loop {
            if let Err(e) = self.recover_once().await {
                tracing::warn!(error = %e, "recovery pass failed; will retry");
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
