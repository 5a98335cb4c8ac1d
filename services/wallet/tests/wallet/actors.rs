//! Who did it is the authenticated caller, never a request field: the journal, the
//! reversal record, the spending limits and the admin-action record name the token's
//! subject; a request's `actor` is kept only as a note ("reported by: …").

use ovation_auth::Role;
use ovation_proto::wallet as pb;
use ovation_store::Db;
use ovation_testkit::{Bearer, databases};
use ovation_wallet::payment::TOKEN_OK;
use sqlx::Row;

use crate::suite::*;

/// (action, actor, reason) of every admin action on `user`, oldest first.
async fn admin_actions(db_url: &str, user: &str) -> Vec<(String, String, String)> {
    let db = Db::connect(db_url, &Default::default()).await.unwrap();
    let mut conn = db.conn().await.unwrap();
    let rows = sqlx::query(
        "SELECT action, actor, reason FROM admin_actions WHERE user_id = $1 \
         ORDER BY created_at_ms, action_id",
    )
    .bind(user)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    db.close().await;
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn the_recorded_actor_is_the_authenticated_caller() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut admin = suite.client(Bearer::role("admin-1", Role::Admin)).await;
        let mut rita = suite.user("rita").await;
        open_account(&mut rita, "rita").await;
        let purchase = buy(&mut rita, "rita", "b1", "coins_100", TOKEN_OK).await;

        // ReversePurchase: the reversal and its journal entry name admin-1.
        let reversed = reverse(
            &mut admin,
            pb::ReversePurchaseRequest {
                idempotency_key: "rev-1".into(),
                purchase_id: purchase.purchase_id.clone(),
                actor: "someone-else".into(),
                reason: "chargeback CB-9".into(),
            },
        )
        .await;
        let reversal = reversed.reversal.unwrap();
        assert_eq!(reversal.actor, "admin-1", "[{backend}]");
        assert_eq!(
            reversal.reason, "chargeback CB-9 (reported by: someone-else)",
            "[{backend}] the request's actor is a note"
        );
        let history = all_transactions(&mut admin, "rita").await;
        assert_eq!(
            history[0].reason,
            pb::TransactionReason::PurchaseReversal as i32
        );
        assert_eq!(history[0].actor, "admin-1", "[{backend}] the journal");

        // SetAccountMinor: the admin-action record names admin-1.
        admin
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "minor-1".into(),
                user_id: "rita".into(),
                minor: true,
                actor: "someone-else".into(),
                reason: "age check failed".into(),
            })
            .await
            .unwrap();
        // Without an actor at all: the field is optional now.
        admin
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "minor-2".into(),
                user_id: "rita".into(),
                minor: true,
                actor: String::new(),
                reason: "confirmed".into(),
            })
            .await
            .unwrap();

        // SetSpendingLimits by rita herself, claiming to be her guardian: rita did it.
        let limits = rita
            .set_spending_limits(pb::SetSpendingLimitsRequest {
                idempotency_key: "cap-1".into(),
                user_id: "rita".into(),
                caps: Some(pb::SpendingCaps {
                    daily_spend_coins: Some(10),
                    ..Default::default()
                }),
                actor: "guardian-1".into(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .limits
            .unwrap();
        assert_eq!(limits.updated_by, "rita", "[{backend}]");

        let actions = admin_actions(&suite.wallet_db_url, "rita").await;
        let expected = [
            (
                "MARK_MINOR",
                "admin-1",
                "age check failed (reported by: someone-else)",
            ),
            ("MARK_MINOR", "admin-1", "confirmed"),
            ("SET_SPENDING_LIMITS", "rita", "reported by: guardian-1"),
        ];
        assert_eq!(
            actions,
            expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
            "[{backend}]"
        );
        suite.stop().await;
    }
}
