//! The age rule is not self-declared (docs/economy.md: minors can neither buy coins nor
//! send gifts).
//! A user's age comes from the token's `age_verified_adult` claim, which the identity
//! provider or the gateway sets after an age check, or from an operator; with
//! `OVATION_WALLET_REQUIRE_AGE_VERIFICATION`, an account nobody verified may neither buy
//! nor spend. Over real gRPC, on SQLite and (when `OVATION_TEST_POSTGRES_URL` is set)
//! PostgreSQL.

use ovation_auth::Role;
use ovation_auth::keys::Claims;
use ovation_proto::wallet as pb;
use ovation_testkit::{Bearer, databases, reason, signer};
use ovation_wallet::WalletSettings;
use ovation_wallet::payment::TOKEN_OK;
use tonic::Code;

use crate::suite::*;

fn required() -> WalletSettings {
    WalletSettings {
        require_age_verification: true,
        ..WalletSettings::default()
    }
}

/// A token for `user` as `role`, carrying the age claim `adult` (None: no claim).
fn token_with_age(user: &str, role: Role, adult: Option<bool>) -> Bearer {
    Bearer::new(&signer().mint_claims(&Claims {
        sub: user.into(),
        roles: vec![role.as_str().into()],
        exp: ovation_auth::keys::now_secs() + 3_600,
        age_verified_adult: adult,
        ..Claims::default()
    }))
}

/// `user` buys the smallest package with a card that pays.
fn purchase(user: &str, key: &str) -> pb::PurchaseCoinsRequest {
    purchase_request(user, key, "coins_100", TOKEN_OK)
}

fn open(user: &str, minor: bool) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        idempotency_key: format!("open-{user}"),
        user_id: user.into(),
        minor,
    }
}

/// Requirement on: an adult per the claim buys and spends; no claim is refused
/// FAILED_PRECONDITION naming the claim; a minor per the claim is refused as a minor.
#[tokio::test]
async fn with_the_requirement_only_verified_adults_buy_and_spend() {
    for db in databases().await {
        let suite = Suite::start_with(&db, required()).await;
        let backend = suite.backend;
        let mut gifting = suite.gifting().await;

        let mut adult = suite
            .client(token_with_age("ada", Role::Viewer, Some(true)))
            .await;
        let opened = adult
            .create_account(open("ada", false))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        assert!(opened.adult_verified, "[{backend}] the claim is recorded");
        let bought = adult
            .purchase_coins(purchase("ada", "b1"))
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap();
        assert_eq!(
            bought.state,
            pb::PurchaseState::Completed as i32,
            "[{backend}]"
        );
        gifting
            .debit_coins(debit("ada-1", "ada", 10))
            .await
            .unwrap();

        let mut unverified = suite
            .client(token_with_age("uma", Role::Viewer, None))
            .await;
        unverified.create_account(open("uma", false)).await.unwrap();
        let refused = unverified
            .purchase_coins(purchase("uma", "b1"))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "AGE_NOT_VERIFIED"),
            "[{backend}] {refused:?}"
        );
        assert!(
            refused.message().contains("age_verified_adult"),
            "the refusal names the claim: {}",
            refused.message()
        );

        let mut minor = suite
            .client(token_with_age("mia", Role::Viewer, Some(false)))
            .await;
        // She says she is not a minor; the verified claim says she is.
        minor.create_account(open("mia", false)).await.unwrap();
        assert!(account(&mut minor, "mia").await.minor, "[{backend}]");
        let refused = minor
            .purchase_coins(purchase("mia", "b1"))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "MINOR_ACCOUNT"),
            "[{backend}]"
        );
        assert_eq!(
            suite.sandbox.charges().len(),
            1,
            "[{backend}] only ada paid"
        );
        suite.stop().await;
    }
}

/// Requirement off (the development default): accounts nobody verified buy and spend, as
/// before; a minor per the claim still never does — not even with coins bought earlier.
#[tokio::test]
async fn without_the_requirement_unverified_accounts_buy_but_minors_never() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut gifting = suite.gifting().await;
        let mut una = suite
            .client(token_with_age("una", Role::Viewer, None))
            .await;
        una.create_account(open("una", false)).await.unwrap();
        una.purchase_coins(purchase("una", "b1")).await.unwrap();
        gifting
            .debit_coins(debit("una-1", "una", 10))
            .await
            .unwrap();

        // Max bought coins unverified; then the identity provider says he is a minor.
        let mut max = suite
            .client(token_with_age("max", Role::Viewer, None))
            .await;
        max.create_account(open("max", false)).await.unwrap();
        max.purchase_coins(purchase("max", "b1")).await.unwrap();
        let mut max = suite
            .client(token_with_age("max", Role::Viewer, Some(false)))
            .await;
        let refused = max.purchase_coins(purchase("max", "b2")).await.unwrap_err();
        assert_eq!(reason(&refused), "MINOR_ACCOUNT", "[{backend}]");
        // The wallet remembers: the gift saga's debit (a service call, no user claim)
        // is refused too.
        let spending = gifting
            .debit_coins(debit("max-1", "max", 1))
            .await
            .unwrap_err();
        assert_eq!(reason(&spending), "MINOR_ACCOUNT", "[{backend}]");
        assert!(account(&mut max, "max").await.minor);
        suite.stop().await;
    }
}

/// Nobody makes themself an adult: not by opening the account with `minor: false`, not by
/// calling SetAccountMinor, and an operator's own claim says nothing about another
/// account. An operator (SetAccountMinor minor=false) or the gateway's claim does verify.
#[tokio::test]
async fn a_user_cannot_declare_themself_adult() {
    for db in databases().await {
        let suite = Suite::start_with(&db, required()).await;
        let backend = suite.backend;
        let mut sam = suite
            .client(token_with_age("sam", Role::Viewer, None))
            .await;
        let opened = sam
            .create_account(open("sam", false))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        assert!(
            !opened.minor && !opened.adult_verified,
            "[{backend}] `minor: false` proves nothing"
        );
        let denied = sam
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "self".into(),
                user_id: "sam".into(),
                minor: false,
                actor: String::new(),
                reason: "I am 30".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "[{backend}]");
        let refused = sam.purchase_coins(purchase("sam", "b1")).await.unwrap_err();
        assert_eq!(reason(&refused), "AGE_NOT_VERIFIED", "[{backend}]");

        // An adult operator opening an account for tom verifies nothing about tom.
        let mut admin = suite
            .client(token_with_age("ops-1", Role::Admin, Some(true)))
            .await;
        admin.create_account(open("tom", false)).await.unwrap();
        let mut tom = suite
            .client(token_with_age("tom", Role::Viewer, None))
            .await;
        let refused = tom.purchase_coins(purchase("tom", "b1")).await.unwrap_err();
        assert_eq!(reason(&refused), "AGE_NOT_VERIFIED", "[{backend}]");

        // The gateway, acting for tom after its age check, vouches with the claim.
        let mut gateway = suite
            .client(token_with_age("tom", Role::Gateway, Some(true)))
            .await;
        gateway.purchase_coins(purchase("tom", "b2")).await.unwrap();

        // An operator verifies sam by hand.
        admin
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "verify-sam".into(),
                user_id: "sam".into(),
                minor: false,
                actor: String::new(),
                reason: "passport checked".into(),
            })
            .await
            .unwrap();
        assert!(account(&mut sam, "sam").await.adult_verified, "[{backend}]");
        sam.purchase_coins(purchase("sam", "b2")).await.unwrap();
        let mut gifting = suite.gifting().await;
        gifting
            .debit_coins(debit("sam-1", "sam", 10))
            .await
            .unwrap();
        suite.stop().await;
    }
}

/// Turning the requirement on for an existing wallet: accounts that bought coins before
/// are unverified, so their gifts (DebitCoins, ReserveCoins from the gift saga, which
/// carries no user claim) are refused until the user buys with the claim or an operator
/// verifies them.
#[tokio::test]
async fn turning_the_requirement_on_stops_unverified_spending() {
    for db in databases().await {
        let mut suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut vic = suite
            .client(token_with_age("vic", Role::Viewer, None))
            .await;
        vic.create_account(open("vic", false)).await.unwrap();
        vic.purchase_coins(purchase("vic", "b1")).await.unwrap();

        suite.restart_wallet(required()).await;
        let mut gifting = suite.gifting().await;
        let spending = gifting
            .debit_coins(debit("vic-1", "vic", 10))
            .await
            .unwrap_err();
        assert_eq!(
            (spending.code(), reason(&spending).as_str()),
            (Code::FailedPrecondition, "AGE_NOT_VERIFIED"),
            "[{backend}]"
        );
        let holding = gifting
            .reserve_coins(pb::ReserveCoinsRequest {
                idempotency_key: "hold-vic".into(),
                operation_id: "hold-vic".into(),
                user_id: "vic".into(),
                coins: 10,
                ttl: None,
                saga_id: String::new(),
                note: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&holding), "AGE_NOT_VERIFIED", "[{backend}]");
        // Vic buys again through the identity provider's verified sign-in: recorded.
        let mut vic = suite
            .client(token_with_age("vic", Role::Viewer, Some(true)))
            .await;
        vic.purchase_coins(purchase("vic", "b2")).await.unwrap();
        gifting
            .debit_coins(debit("vic-2", "vic", 10))
            .await
            .unwrap();
        suite.stop().await;
    }
}
