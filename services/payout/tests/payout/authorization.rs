//! The payout service's rows of the authorization matrix (ARCHITECTURE.md), over real
//! gRPC: each row allowed and denied, with nothing written by a denied call; and every RPC
//! refusing callers without valid credentials.

use ovation_auth::Role;
use ovation_proto::payout as pb;
use ovation_testkit::{Bearer, PayoutClient, TestDatabase, code, databases};
use tonic::Code;

use crate::suite::*;

/// ann: verified (sandbox-ok) with 10 000 diamonds and one payout; bob: registered.
struct Fixture {
    running: ovation_testkit::Running,
    clients: Clients,
    ann_payout: String,
    _catalog: Catalog,
}

async fn fixture(db: &TestDatabase) -> Fixture {
    let catalog = start_catalog().await;
    let (running, _sandbox) = start(db, &catalog).await;
    let clients = Clients::new(&running).await;
    verified_creator(&clients, "ann", "sandbox-ok").await;
    register(&clients, "bob").await;
    earn(&clients, "fixture-credit", "ann", 10_000).await;
    let ann_payout = requested_payout(&mut clients.admin.clone(), "fixture-payout", "ann", 1_000)
        .await
        .payout_id;
    Fixture {
        running,
        clients,
        ann_payout,
        _catalog: catalog,
    }
}

/// The callers who may never act on ann's records.
fn strangers_to_ann() -> Vec<(&'static str, Bearer)> {
    vec![
        ("bob, another creator", Bearer::creator("bob")),
        ("a viewer token for ann", Bearer::role("ann", Role::Viewer)),
        (
            "the gateway acting for bob",
            Bearer::role("bob", Role::Gateway),
        ),
        ("service:gifting", as_gifting()),
        (
            "service:payout",
            Bearer::role("payout", Role::PayoutService),
        ),
        (
            "service:wallet",
            Bearer::role("wallet", Role::WalletService),
        ),
    ]
}

/// Ann herself (creator token or gateway for her) and an admin.
fn ann_or_admin() -> Vec<(&'static str, Bearer)> {
    vec![
        ("ann, a creator", Bearer::creator("ann")),
        (
            "the gateway acting for ann",
            Bearer::role("ann", Role::Gateway),
        ),
        ("an admin", Bearer::admin()),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Own {
    GetCreator,
    GetDiamondBalance,
    ListEarnings,
    RequestPayout,
    GetPayout,
    ListPayouts,
    SetPayoutAccount,
}

async fn own(rpc: Own, client: &mut PayoutClient, fixture: &Fixture, tag: &str) -> Code {
    let ann = || "ann".to_string();
    match rpc {
        Own::GetCreator => code(
            client
                .get_creator(pb::GetCreatorRequest { creator_id: ann() })
                .await,
        ),
        Own::GetDiamondBalance => code(
            client
                .get_diamond_balance(pb::GetDiamondBalanceRequest { creator_id: ann() })
                .await,
        ),
        Own::ListEarnings => code(
            client
                .list_earnings(pb::ListEarningsRequest {
                    creator_id: ann(),
                    ..Default::default()
                })
                .await,
        ),
        Own::RequestPayout => code(
            client
                .request_payout(request_payout(&format!("auth-payout-{tag}"), "ann", 1_000))
                .await,
        ),
        Own::GetPayout => code(
            client
                .get_payout(pb::GetPayoutRequest {
                    payout_id: fixture.ann_payout.clone(),
                })
                .await,
        ),
        Own::ListPayouts => code(
            client
                .list_payouts(pb::ListPayoutsRequest {
                    creator_id: ann(),
                    ..Default::default()
                })
                .await,
        ),
        Own::SetPayoutAccount => code(
            client
                .set_payout_account(pb::SetPayoutAccountRequest {
                    idempotency_key: format!("auth-account-{tag}"),
                    creator_id: ann(),
                    account_reference: format!("sandbox-ok-{tag}"),
                    holder_name: "Ann".into(),
                })
                .await,
        ),
    }
}

#[tokio::test]
async fn a_creators_own_records_are_for_that_creator_and_admins_only() {
    for db in databases().await {
        let f = fixture(&db).await;
        for rpc in [
            Own::GetCreator,
            Own::GetDiamondBalance,
            Own::ListEarnings,
            Own::RequestPayout,
            Own::GetPayout,
            Own::ListPayouts,
        ] {
            for (i, (who, bearer)) in strangers_to_ann().into_iter().enumerate() {
                let mut client = f.clients.with(bearer);
                assert_eq!(
                    own(rpc, &mut client, &f, &format!("denied-{i}")).await,
                    Code::PermissionDenied,
                    "{who} calls {rpc:?} for ann on {}",
                    db.backend()
                );
            }
            for (i, (who, bearer)) in ann_or_admin().into_iter().enumerate() {
                let mut client = f.clients.with(bearer);
                assert_eq!(
                    own(rpc, &mut client, &f, &format!("allowed-{i}")).await,
                    Code::Ok,
                    "{who} calls {rpc:?} for ann on {}",
                    db.backend()
                );
            }
        }
        // Where ann is paid: ann herself (or the gateway for her) only; an admin verifies
        // accounts, so may not set one (four eyes). Last: it sends the account back to
        // review.
        let denied = strangers_to_ann()
            .into_iter()
            .chain([("an admin", Bearer::admin())])
            .enumerate()
            .map(|(i, (who, bearer))| (who, bearer, format!("denied-{i}"), Code::PermissionDenied));
        let allowed = ann_or_admin()
            .into_iter()
            .filter(|(who, _)| *who != "an admin")
            .enumerate()
            .map(|(i, (who, bearer))| (who, bearer, format!("allowed-{i}"), Code::Ok));
        for (who, bearer, tag, expected) in denied.chain(allowed) {
            let mut client = f.clients.with(bearer);
            assert_eq!(
                own(Own::SetPayoutAccount, &mut client, &f, &tag).await,
                expected,
                "{who} sets ann's payout account on {}",
                db.backend()
            );
        }
        // Denied calls wrote nothing: the fixture's payout and the three allowed ones,
        // and the account is the last one an allowed caller set.
        let mut admin = f.clients.admin.clone();
        let payouts = admin
            .list_payouts(pb::ListPayoutsRequest {
                creator_id: "ann".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .payouts;
        assert_eq!(payouts.len(), 4, "on {}", db.backend());
        let b = balance(&mut admin, "ann").await;
        assert_eq!(b.held_diamonds + b.paid_out_diamonds, 4_000);
        let account = creator(&mut admin, "ann").await.payout_account.unwrap();
        assert_eq!(account.account_reference, "sandbox-ok-allowed-1");
        assert_eq!(
            account.version, 3,
            "set by the fixture, ann, and the gateway"
        );

        // RegisterCreator: a creator registers themselves (or an admin does).
        let register_as = |id: &str, bearer: Bearer| {
            let mut client = f.clients.with(bearer);
            let request = pb::RegisterCreatorRequest {
                idempotency_key: format!("reg-{id}"),
                creator_id: id.to_owned(),
                display_name: "New".into(),
            };
            async move { code(client.register_creator(request).await) }
        };
        assert_eq!(
            register_as("new-1", Bearer::creator("new-1")).await,
            Code::Ok
        );
        assert_eq!(
            register_as("new-2", Bearer::role("new-2", Role::Gateway)).await,
            Code::Ok
        );
        assert_eq!(register_as("new-3", Bearer::admin()).await, Code::Ok);
        for (id, bearer) in [
            ("new-4", Bearer::creator("bob")),
            ("new-5", Bearer::role("new-5", Role::Viewer)),
            ("new-6", as_gifting()),
            ("new-7", Bearer::role("bob", Role::Gateway)),
        ] {
            assert_eq!(
                register_as(id, bearer).await,
                Code::PermissionDenied,
                "{id}"
            );
            let missing = admin
                .get_creator(pb::GetCreatorRequest {
                    creator_id: id.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(missing.code(), Code::NotFound, "{id} was not registered");
        }
        f.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn every_creators_payouts_are_for_admins_only() {
    for db in databases().await {
        let f = fixture(&db).await;
        let all = || pb::ListPayoutsRequest::default();
        let mut admin = f.clients.admin.clone();
        assert_eq!(code(admin.list_payouts(all()).await), Code::Ok);
        for (who, bearer) in ann_or_admin()
            .into_iter()
            .filter(|(who, _)| *who != "an admin")
            .chain(strangers_to_ann())
        {
            let mut client = f.clients.with(bearer);
            assert_eq!(
                code(client.list_payouts(all()).await),
                Code::PermissionDenied,
                "{who} lists every creator's payouts on {}",
                db.backend()
            );
        }
        f.running.stop().await.unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum AdminRpc {
    Verify,
    Suspend,
    Reinstate,
    GetLedgerSummary,
    ListCredits,
}

async fn admin_rpc(rpc: AdminRpc, client: &mut PayoutClient, tag: &str) -> Code {
    match rpc {
        AdminRpc::Verify => code(
            client
                .verify_payout_account(pb::VerifyPayoutAccountRequest {
                    idempotency_key: format!("v-{tag}"),
                    creator_id: "ann".into(),
                    decision: pb::VerificationStatus::Rejected as i32,
                    account_reference: String::new(),
                    actor: "someone".into(),
                    reason: "testing".into(),
                    account_version: 1,
                })
                .await,
        ),
        AdminRpc::Suspend => code(
            client
                .suspend_creator(pb::SuspendCreatorRequest {
                    idempotency_key: format!("s-{tag}"),
                    creator_id: "ann".into(),
                    actor: "someone".into(),
                    reason: "testing".into(),
                })
                .await,
        ),
        AdminRpc::Reinstate => code(
            client
                .reinstate_creator(pb::ReinstateCreatorRequest {
                    idempotency_key: format!("r-{tag}"),
                    creator_id: "ann".into(),
                    actor: "someone".into(),
                    reason: "testing".into(),
                })
                .await,
        ),
        AdminRpc::GetLedgerSummary => code(
            client
                .get_ledger_summary(pb::GetLedgerSummaryRequest {})
                .await,
        ),
        AdminRpc::ListCredits => code(client.list_credits(pb::ListCreditsRequest::default()).await),
    }
}

#[tokio::test]
async fn verification_suspension_and_audit_reads_are_for_admins_only() {
    for db in databases().await {
        let f = fixture(&db).await;
        let mut admin = f.clients.admin.clone();
        let ann_before = creator(&mut admin, "ann").await;
        for rpc in [
            AdminRpc::Verify,
            AdminRpc::Suspend,
            AdminRpc::Reinstate,
            AdminRpc::GetLedgerSummary,
            AdminRpc::ListCredits,
        ] {
            for (i, (who, bearer)) in ann_or_admin()
                .into_iter()
                .filter(|(who, _)| *who != "an admin")
                .chain(strangers_to_ann())
                .enumerate()
            {
                let mut client = f.clients.with(bearer);
                assert_eq!(
                    admin_rpc(rpc, &mut client, &format!("denied-{i}")).await,
                    Code::PermissionDenied,
                    "{who} calls {rpc:?} on {}",
                    db.backend()
                );
            }
        }
        // Denied calls changed nothing about ann.
        let ann_after = creator(&mut admin, "ann").await;
        assert_eq!(ann_after, ann_before, "on {}", db.backend());
        for rpc in [
            AdminRpc::Verify,
            AdminRpc::Suspend,
            AdminRpc::Reinstate,
            AdminRpc::GetLedgerSummary,
            AdminRpc::ListCredits,
        ] {
            assert_eq!(
                admin_rpc(rpc, &mut admin, "allowed").await,
                Code::Ok,
                "an admin calls {rpc:?} on {}",
                db.backend()
            );
        }
        f.running.stop().await.unwrap();
    }
}

/// A review (APPROVE) or a cancellation of `payout_id` by `client`; its code.
async fn payout_control(
    client: &mut PayoutClient,
    cancel: bool,
    payout_id: &str,
    tag: &str,
) -> Code {
    if cancel {
        code(
            client
                .cancel_payout(pb::CancelPayoutRequest {
                    idempotency_key: format!("c-{tag}"),
                    payout_id: payout_id.into(),
                    reason: "testing".into(),
                    actor: String::new(),
                })
                .await,
        )
    } else {
        code(
            client
                .review_payout(pb::ReviewPayoutRequest {
                    idempotency_key: format!("r-{tag}"),
                    payout_id: payout_id.into(),
                    decision: pb::PayoutReviewDecision::Approve.into(),
                    reason: "testing".into(),
                    actor: String::new(),
                })
                .await,
        )
    }
}

#[tokio::test]
async fn payout_reviews_and_cancellations_are_for_admins_only() {
    for db in databases().await {
        let f = fixture(&db).await;
        earn(&f.clients, "review-credit", "ann", 40_000).await;
        let mut admin = f.clients.admin.clone();
        // At the demo's review threshold: both wait in REVIEW.
        let mut in_review = Vec::new();
        for key in ["big-1", "big-2"] {
            in_review.push(
                requested_payout(&mut admin, key, "ann", 20_000)
                    .await
                    .payout_id,
            );
        }
        for cancel in [false, true] {
            for (i, (who, bearer)) in ann_or_admin()
                .into_iter()
                .filter(|(who, _)| *who != "an admin")
                .chain(strangers_to_ann())
                .enumerate()
            {
                let mut client = f.clients.with(bearer);
                assert_eq!(
                    payout_control(&mut client, cancel, &in_review[0], &format!("denied-{i}"))
                        .await,
                    Code::PermissionDenied,
                    "{who} (cancel: {cancel}) on {}",
                    db.backend()
                );
            }
        }
        for id in &in_review {
            let payout = get_payout(&mut admin, id).await;
            assert_eq!(
                payout.state,
                pb::PayoutState::Review as i32,
                "denied calls wrote nothing"
            );
        }
        // An admin other than the account's verifier approves; any admin cancels.
        let mut admin_2 = f.clients.with(Bearer::role("admin-2", Role::Admin));
        assert_eq!(
            payout_control(&mut admin_2, false, &in_review[0], "allowed").await,
            Code::Ok,
            "on {}",
            db.backend()
        );
        assert_eq!(
            payout_control(&mut admin, true, &in_review[1], "allowed").await,
            Code::Ok,
            "on {}",
            db.backend()
        );
        f.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn only_the_gifting_service_credits_diamonds() {
    for db in databases().await {
        let f = fixture(&db).await;
        let mut admin = f.clients.admin.clone();
        let before = balance(&mut admin, "ann").await;
        for (i, (who, bearer)) in ann_or_admin()
            .into_iter()
            .chain(strangers_to_ann())
            .filter(|(who, _)| *who != "service:gifting")
            .enumerate()
        {
            let mut client = f.clients.with(bearer);
            assert_eq!(
                code(
                    client
                        .credit_diamonds(credit_request(&format!("denied-{i}"), "ann", 100))
                        .await
                ),
                Code::PermissionDenied,
                "{who} credits diamonds on {}",
                db.backend()
            );
            assert_eq!(
                code(
                    client
                        .credit_diamonds_batch(credit_batch(vec![credit_item(
                            &format!("denied-batch-{i}"),
                            "ann",
                            100
                        )]))
                        .await
                ),
                Code::PermissionDenied,
                "{who} credits diamonds in a batch on {}",
                db.backend()
            );
        }
        // (The fixture's payout may settle meanwhile: compare what credits move.)
        let after = balance(&mut admin, "ann").await;
        assert_eq!(
            (after.available_diamonds, after.lifetime_earned_diamonds),
            (before.available_diamonds, before.lifetime_earned_diamonds),
            "nothing credited"
        );
        let mut gifting = f.clients.gifting.clone();
        assert_eq!(
            code(
                gifting
                    .credit_diamonds(credit_request("allowed", "ann", 100))
                    .await
            ),
            Code::Ok
        );
        assert_eq!(
            code(
                gifting
                    .credit_diamonds_batch(credit_batch(vec![credit_item(
                        "allowed-batch",
                        "ann",
                        100
                    )]))
                    .await
            ),
            Code::Ok
        );
        assert_eq!(
            balance(&mut admin, "ann").await.lifetime_earned_diamonds,
            before.lifetime_earned_diamonds + 100
        );
        f.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn only_wallet_gifting_and_admins_claw_back_and_only_admins_list_clawbacks() {
    for db in databases().await {
        let f = fixture(&db).await;
        let mut admin = f.clients.admin.clone();
        let allowed = ["service:wallet", "service:gifting", "an admin"];
        for (i, (who, bearer)) in ann_or_admin()
            .into_iter()
            .chain(strangers_to_ann())
            .filter(|(who, _)| !allowed.contains(who))
            .enumerate()
        {
            let mut client = f.clients.with(bearer);
            assert_eq!(
                code(
                    client
                        .clawback_diamonds(clawback_request(
                            &format!("denied-{i}"),
                            "fixture-credit",
                            100
                        ))
                        .await
                ),
                Code::PermissionDenied,
                "{who} claws back on {}",
                db.backend()
            );
            assert_eq!(
                code(
                    client
                        .list_clawbacks(pb::ListClawbacksRequest::default())
                        .await
                ),
                Code::PermissionDenied,
                "{who} lists clawbacks"
            );
        }
        let none = admin
            .list_clawbacks(pb::ListClawbacksRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            none.clawbacks.is_empty(),
            "nothing written by a denied call"
        );
        for (i, bearer) in [
            Bearer::role("wallet", Role::WalletService),
            as_gifting(),
            Bearer::admin(),
        ]
        .into_iter()
        .enumerate()
        {
            let mut client = f.clients.with(bearer);
            assert_eq!(
                code(
                    client
                        .clawback_diamonds(clawback_request(
                            &format!("allowed-{i}"),
                            "fixture-credit",
                            100
                        ))
                        .await
                ),
                Code::Ok,
                "on {}",
                db.backend()
            );
        }
        let listed = admin
            .list_clawbacks(pb::ListClawbacksRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.clawbacks.len(), 3);
        f.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_on_every_rpc() {
    let db = TestDatabase::sqlite();
    let f = fixture(&db).await;
    let signer = ovation_testkit::signer();
    let now = ovation_auth::keys::now_secs();
    let expired = signer.mint_at("ann", &[Role::Creator], now - 3_600, 60);
    let forged = ovation_auth::Signer::hs256(ovation_testkit::TEST_KID, &[7u8; 32]).mint(
        "ann",
        &[Role::Creator],
        60,
    );
    for (what, bearer) in [
        ("no token", Bearer::none()),
        ("garbage", Bearer::new("garbage")),
        ("expired", Bearer::new(&expired)),
        ("wrong signature", Bearer::new(&forged)),
    ] {
        let mut client = f.clients.with(bearer);
        let codes = [
            code(
                client
                    .register_creator(pb::RegisterCreatorRequest {
                        idempotency_key: "k".into(),
                        creator_id: "ann".into(),
                        display_name: "Ann".into(),
                    })
                    .await,
            ),
            own(Own::SetPayoutAccount, &mut client, &f, "x").await,
            own(Own::RequestPayout, &mut client, &f, "x").await,
            own(Own::GetCreator, &mut client, &f, "x").await,
            own(Own::GetDiamondBalance, &mut client, &f, "x").await,
            own(Own::ListEarnings, &mut client, &f, "x").await,
            own(Own::GetPayout, &mut client, &f, "x").await,
            own(Own::ListPayouts, &mut client, &f, "x").await,
            admin_rpc(AdminRpc::Verify, &mut client, "x").await,
            admin_rpc(AdminRpc::Suspend, &mut client, "x").await,
            admin_rpc(AdminRpc::Reinstate, &mut client, "x").await,
            admin_rpc(AdminRpc::GetLedgerSummary, &mut client, "x").await,
            admin_rpc(AdminRpc::ListCredits, &mut client, "x").await,
            payout_control(&mut client, false, &f.ann_payout, "x").await,
            payout_control(&mut client, true, &f.ann_payout, "x").await,
            code(client.credit_diamonds(credit_request("x", "ann", 10)).await),
            code(
                client
                    .credit_diamonds_batch(credit_batch(vec![credit_item("x", "ann", 10)]))
                    .await,
            ),
        ];
        assert!(
            codes.iter().all(|c| *c == Code::Unauthenticated),
            "{what}: {codes:?}"
        );
    }
    assert!(ovation_testkit::serving(f.running.addr).await);
    f.running.stop().await.unwrap();
}
