//! Gifting's rows of the authorization matrix (ARCHITECTURE.md), over real gRPC.

use ovation_auth::Role;
use ovation_proto::gifting as pb;
use ovation_testkit::{Bearer, TestDatabase, code};
use tonic::Code;

use crate::suite::{receipt_of, send, start};

#[tokio::test]
async fn each_role_reaches_exactly_its_rows() {
    let suite = start(TestDatabase::sqlite()).await;
    suite.funded_viewer("alice", "coins_1000").await;
    suite.creator("bob").await;
    let clients = &suite.clients;
    let mut alice = clients.gifting_as("alice").await;
    let mut gateway = clients.gifting(Bearer::role("alice", Role::Gateway)).await;
    let mut mallory = clients.gifting_as("mallory").await;
    let mut bob = clients.gifting(Bearer::creator("bob")).await;
    let mut admin = clients.gifting_admin().await;
    let mut wallet_service = clients
        .gifting(Bearer::role("wallet", Role::WalletService))
        .await;

    // Sending: the sender (or the gateway for them) only.
    let sent = receipt_of(&mut alice, send("k1", "alice", "bob", "rose", 1)).await;
    assert_eq!(
        code(
            gateway
                .send_gift(send("k2", "alice", "bob", "rose", 1))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            mallory
                .send_gift(send("k3", "alice", "bob", "rose", 1))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.send_gift(send("k4", "alice", "bob", "rose", 1)).await),
        Code::PermissionDenied
    );

    // A receipt: its sender, its creator (without the sender's balance), an admin.
    let get = || pb::GetSentGiftRequest {
        saga_id: sent.saga_id.clone(),
    };
    assert!(
        alice
            .get_sent_gift(get())
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap()
            .sender_balance_after_coins
            .is_some()
    );
    let for_creator = bob
        .get_sent_gift(get())
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        for_creator.sender_balance_after_coins, None,
        "the creator does not see the viewer's balance"
    );
    assert_eq!(code(admin.get_sent_gift(get()).await), Code::Ok);
    assert_eq!(code(mallory.get_sent_gift(get()).await), Code::NotFound);

    // Lists: one's own sent or received gifts; a whole stream only for admins.
    let list = |sender: &str, creator: &str, stream: &str| pb::ListSentGiftsRequest {
        sender_user_id: sender.into(),
        creator_id: creator.into(),
        stream_id: stream.into(),
        ..Default::default()
    };
    assert_eq!(
        code(alice.list_sent_gifts(list("alice", "", "")).await),
        Code::Ok
    );
    assert_eq!(
        code(bob.list_sent_gifts(list("", "bob", "")).await),
        Code::Ok
    );
    assert_eq!(
        code(mallory.list_sent_gifts(list("alice", "", "")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(alice.list_sent_gifts(list("", "", "stream-1")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.list_sent_gifts(list("", "", "stream-1")).await),
        Code::Ok
    );

    // Leaderboards are public to every authenticated caller.
    let board = || pb::GetStreamLeaderboardRequest {
        stream_id: "stream-1".into(),
        max_entries: 0,
    };
    assert_eq!(
        code(mallory.get_stream_leaderboard(board()).await),
        Code::Ok
    );
    assert_eq!(
        code(wallet_service.get_stream_leaderboard(board()).await),
        Code::Ok
    );

    // Operator views and retries: admins only.
    assert_eq!(
        code(
            alice
                .list_stuck_sagas(pb::ListStuckSagasRequest::default())
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            admin
                .list_stuck_sagas(pb::ListStuckSagasRequest::default())
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(bob.list_sagas(pb::ListSagasRequest::default()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.list_sagas(pb::ListSagasRequest::default()).await),
        Code::Ok
    );
    let retry = pb::RetrySagaRequest {
        idempotency_key: "r".into(),
        saga_id: sent.saga_id.clone(),
        actor: "x".into(),
        reason: "y".into(),
    };
    assert_eq!(
        code(alice.retry_saga(retry.clone()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(admin.retry_saga(retry).await),
        Code::FailedPrecondition,
        "terminal sagas are not retried"
    );

    // Reversing a gift (fraud review): admins only; a refusal records nothing.
    let reverse = |key: &str| pb::ReverseGiftRequest {
        idempotency_key: key.into(),
        saga_id: sent.saga_id.clone(),
        actor: String::new(),
        reason: "fraud review".into(),
        return_coins: false,
    };
    for (who, client) in [
        ("the sender", &mut alice),
        ("the creator", &mut bob),
        ("the gateway", &mut gateway),
        ("a service", &mut wallet_service),
    ] {
        assert_eq!(
            code(client.reverse_gift(reverse("rv")).await),
            Code::PermissionDenied,
            "{who} may not reverse a gift"
        );
    }
    let unreversed = admin.get_sent_gift(get()).await.unwrap().into_inner();
    assert_eq!(
        unreversed.receipt.unwrap().reversal,
        None,
        "nothing recorded"
    );
    let reversed = admin
        .reverse_gift(reverse("rv"))
        .await
        .unwrap()
        .into_inner()
        .gift
        .unwrap()
        .reversal
        .unwrap();
    assert_eq!(
        (reversed.actor.as_str(), reversed.return_coins),
        ("test-admin", false),
        "the actor recorded is the caller"
    );

    // Denied sends wrote nothing: two gifts of one rose.
    assert_eq!(suite.coins("alice").await, 1_100 - 2);
    suite.stop().await;
}
