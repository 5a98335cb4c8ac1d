//! The wallet's rows of the authorization matrix (ARCHITECTURE.md), over real gRPC:
//! each row allowed and denied; a denied call writes nothing.

use ovation_auth::Role;
use ovation_proto::wallet as pb;
use ovation_testkit::{Bearer, TestDatabase, code};
use ovation_wallet::payment::TOKEN_OK;
use tonic::Code;

use crate::suite::*;

#[tokio::test]
async fn each_role_reaches_exactly_its_rows() {
    let db = TestDatabase::sqlite();
    let suite = Suite::start(&db).await;
    let mut alice = suite.user("alice").await;
    open_account(&mut alice, "alice").await;
    let purchase = buy(&mut alice, "alice", "b1", "coins_100", TOKEN_OK).await;
    let mut mallory = suite.user("mallory").await;
    open_account(&mut mallory, "mallory").await;
    let mut gateway = suite.client(Bearer::role("alice", Role::Gateway)).await;
    let mut gifting = suite.gifting().await;
    let mut admin = suite.admin().await;
    let mut wallet_service = suite
        .client(Bearer::role("wallet", Role::WalletService))
        .await;

    // Own account: the user, the gateway acting for them, an admin; not another viewer.
    let get = |user: &str| pb::GetBalanceRequest {
        user_id: user.into(),
    };
    assert_eq!(code(alice.get_balance(get("alice")).await), Code::Ok);
    assert_eq!(code(gateway.get_balance(get("alice")).await), Code::Ok);
    assert_eq!(code(admin.get_balance(get("alice")).await), Code::Ok);
    assert_eq!(
        code(mallory.get_balance(get("alice")).await),
        Code::PermissionDenied
    );
    let history = |user: &str| pb::ListTransactionsRequest {
        user_id: user.into(),
        ..Default::default()
    };
    assert_eq!(
        code(alice.list_transactions(history("alice")).await),
        Code::Ok
    );
    assert_eq!(
        code(mallory.list_transactions(history("alice")).await),
        Code::PermissionDenied
    );
    // Someone else's purchase is not even visible.
    let get_purchase = || pb::GetPurchaseRequest {
        purchase_id: purchase.purchase_id.clone(),
    };
    assert_eq!(code(alice.get_purchase(get_purchase()).await), Code::Ok);
    assert_eq!(
        code(mallory.get_purchase(get_purchase()).await),
        Code::NotFound
    );

    // Buying: only the user (or the gateway for them); not an admin, not another user.
    let purchase_for = |key: &str| pb::PurchaseCoinsRequest {
        idempotency_key: key.into(),
        user_id: "alice".into(),
        package_id: "coins_100".into(),
        currency_code: "USD".into(),
        payment_token: TOKEN_OK.into(),
        expected_price: None,
        payment_method: None,
    };
    assert_eq!(
        code(gateway.purchase_coins(purchase_for("g1")).await),
        Code::Ok
    );
    assert_eq!(
        code(admin.purchase_coins(purchase_for("a1")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(mallory.purchase_coins(purchase_for("m1")).await),
        Code::PermissionDenied
    );

    // Spending: only the gifting service; not the user, an admin or another service.
    assert_eq!(
        code(alice.debit_coins(debit("u1", "alice", 1)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.debit_coins(debit("a1", "alice", 1)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(wallet_service.debit_coins(debit("w1", "alice", 1)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(gifting.debit_coins(debit("g1", "alice", 1)).await),
        Code::Ok
    );
    let batch = |op: &str| pb::DebitCoinsBatchRequest {
        items: vec![pb::DebitCoinsItem {
            operation_id: op.into(),
            user_id: "alice".into(),
            coins: 1,
            ..Default::default()
        }],
    };
    for (denied, op) in [
        (&mut alice, "bu1"),
        (&mut admin, "ba1"),
        (&mut wallet_service, "bw1"),
        (&mut gateway, "bg1"),
    ] {
        assert_eq!(
            code(denied.debit_coins_batch(batch(op)).await),
            Code::PermissionDenied,
            "{op}"
        );
    }

    // Spending limits: the user or an admin.
    let caps = |key: &str, user: &str| pb::SetSpendingLimitsRequest {
        idempotency_key: key.into(),
        user_id: user.into(),
        caps: Some(pb::SpendingCaps::default()),
        actor: "x".into(),
        reason: String::new(),
    };
    assert_eq!(
        code(alice.set_spending_limits(caps("c1", "alice")).await),
        Code::Ok
    );
    assert_eq!(
        code(mallory.set_spending_limits(caps("c2", "alice")).await),
        Code::PermissionDenied
    );

    // Admin-only: minors, reversals, audit reads.
    let minor = |key: &str| pb::SetAccountMinorRequest {
        idempotency_key: key.into(),
        user_id: "mallory".into(),
        minor: true,
        actor: "x".into(),
        reason: "y".into(),
    };
    assert_eq!(
        code(alice.set_account_minor(minor("m1")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(gifting.set_account_minor(minor("m2")).await),
        Code::PermissionDenied
    );
    assert_eq!(code(admin.set_account_minor(minor("m3")).await), Code::Ok);
    let reverse = |key: &str| pb::ReversePurchaseRequest {
        idempotency_key: key.into(),
        purchase_id: purchase.purchase_id.clone(),
        actor: "x".into(),
        reason: "y".into(),
    };
    assert_eq!(
        code(alice.reverse_purchase(reverse("r1")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            gifting
                .get_ledger_summary(pb::GetLedgerSummaryRequest {})
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(alice.list_debits(pb::ListDebitsRequest::default()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.list_debits(pb::ListDebitsRequest::default()).await),
        Code::Ok
    );
    assert_eq!(code(admin.reverse_purchase(reverse("r2")).await), Code::Ok);
    // The clawback orders of reversed purchases: admins only.
    let orders = pb::ListClawbackOrdersRequest::default;
    assert_eq!(
        code(alice.list_clawback_orders(orders()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(gifting.list_clawback_orders(orders()).await),
        Code::PermissionDenied
    );
    assert_eq!(code(admin.list_clawback_orders(orders()).await), Code::Ok);

    // No token at all.
    let mut anonymous = suite.client(Bearer::none()).await;
    assert_eq!(
        code(anonymous.get_balance(get("alice")).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.debit_coins(debit("n1", "alice", 1)).await),
        Code::Unauthenticated
    );

    // The denied calls wrote nothing: alice has her purchases and one debit, no more.
    let debits = admin
        .list_debits(pb::ListDebitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .debits;
    assert_eq!(debits.len(), 1);
    assert_eq!(debits[0].operation_id, "g1");
    suite.stop().await;
}
