//! Who decides where money goes (issue 11, items 8 and 9), over real gRPC against SQLite
//! and PostgreSQL: the journal records the authenticated caller, never a name the request
//! supplies; only the creator (or the gateway for them) sets the payout account; a
//! verification names the account version it approves and is refused if the account
//! changed since; the one who set the account cannot verify it.

use ovation_auth::Role;
use ovation_proto::payout as pb;

use ovation_testkit::services::{payout_config, start_payout};
use ovation_testkit::{Bearer, PayoutClient, TestDatabase, databases, reason, violated_fields};
use tonic::Code;

use crate::suite::*;

/// ann, registered by `client`, with the account `reference` that `client` set for her.
async fn ann_with_an_account(client: &mut PayoutClient, reference: &str) -> pb::PayoutAccount {
    client
        .register_creator(pb::RegisterCreatorRequest {
            idempotency_key: "reg".into(),
            creator_id: "ann".into(),
            display_name: "Ann".into(),
        })
        .await
        .unwrap();
    account_set(client, account_request("acct", reference, "Ann")).await
}

/// ann's payout account `reference`, held by `holder`.
fn account_request(key: &str, reference: &str, holder: &str) -> pb::SetPayoutAccountRequest {
    pb::SetPayoutAccountRequest {
        idempotency_key: key.into(),
        creator_id: "ann".into(),
        account_reference: reference.into(),
        holder_name: holder.into(),
    }
}

#[tokio::test]
async fn the_journal_records_the_authenticated_caller_and_a_named_actor_only_as_a_note() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        let version = set_account(&c, "ann", "sandbox-ok")
            .await
            .payout_account
            .unwrap()
            .version;
        let mut admin_1 = c.with(Bearer::role("admin-1", Role::Admin));

        let verified = account_reviewed(
            &mut admin_1,
            pb::VerifyPayoutAccountRequest {
                actor: "someone-else".into(),
                ..review("v-1", "ann", version)
            },
        )
        .await;
        assert_eq!(verified.reviewed_by, "admin-1", "on {}", db.backend());
        assert_eq!(
            verified.review_reason,
            "documents checked (reported by: someone-else)"
        );
        let suspended = admin_1
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s-1".into(),
                creator_id: "ann".into(),
                actor: "someone-else".into(),
                reason: "chargebacks".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .creator
            .unwrap();
        assert_eq!(suspended.suspension.unwrap().actor, "admin-1");
        // The note is optional.
        admin_1
            .reinstate_creator(reinstate_request("ann", "r-1"))
            .await
            .unwrap();
        let lines = journal(&db, "ann").await;
        let admin_lines: Vec<_> = lines
            .iter()
            .filter(|(action, ..)| action != "REGISTER" && action != "SET_PAYOUT_ACCOUNT")
            .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
            .collect();
        assert_eq!(
            admin_lines,
            [
                (
                    "VERIFY",
                    "admin-1",
                    "admin-1",
                    "documents checked (reported by: someone-else)"
                ),
                (
                    "SUSPEND",
                    "admin-1",
                    "admin-1",
                    "chargebacks (reported by: someone-else)"
                ),
                ("REINSTATE", "admin-1", "admin-1", "cleared"),
            ],
            "on {}",
            db.backend()
        );
        // A note that no longer fits beside the reason is refused, and nothing changes.
        let long = admin_1
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s-2".into(),
                creator_id: "ann".into(),
                actor: "n".repeat(128),
                reason: "r".repeat(400),
            })
            .await
            .unwrap_err();
        assert_eq!(long.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&long), ["actor"]);
        assert_eq!(
            creator(&mut admin_1, "ann").await.state,
            pb::CreatorState::Active as i32
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn only_the_creator_or_the_gateway_for_them_sets_the_payout_account() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok-ann").await;
        let mut admin = c.admin.clone();
        let before = creator(&mut admin, "ann").await;

        let denied = admin
            .set_payout_account(account_request("hijack", "sandbox-ok-mallory", "Mallory"))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "on {}", db.backend());
        assert_eq!(creator(&mut admin, "ann").await, before, "nothing changed");

        // The gateway for ann may; the account is recorded as set by ann.
        let mut gateway = c.with(Bearer::role("ann", Role::Gateway));
        let account = account_set(
            &mut gateway,
            account_request("new-bank", "sandbox-ok-ann-2", "Ann"),
        )
        .await;
        assert_eq!(
            account.verification_status,
            pb::VerificationStatus::Pending as i32
        );
        assert_eq!(account.set_by, "ann");
        assert_eq!(account.version, before.payout_account.unwrap().version + 1);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_verification_names_the_account_version_it_approves() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        let first = set_account(&c, "ann", "sandbox-ok-a")
            .await
            .payout_account
            .unwrap();
        assert_eq!((first.version, first.set_by.as_str()), (1, "ann"));
        let mut admin = c.admin.clone();

        // Naming no version is not a review of anything.
        let unnamed = admin
            .verify_payout_account(review("v-0", "ann", 0))
            .await
            .unwrap_err();
        assert_eq!(unnamed.code(), Code::InvalidArgument, "on {}", db.backend());
        assert_eq!(violated_fields(&unnamed), ["account_version"]);

        // The admin reads version 1; meanwhile the account changes to b and back to a.
        set_account(&c, "ann", "sandbox-ok-b").await;
        let back = set_account(&c, "ann", "sandbox-ok-a-again").await;
        let back = account_set(
            &mut c.creator("ann"),
            account_request(
                "back-to-a",
                "sandbox-ok-a",
                &back.payout_account.unwrap().holder_name,
            ),
        )
        .await;
        assert_eq!(back.version, 4);
        for stale in [
            review("v-1", "ann", 1),
            pb::VerifyPayoutAccountRequest {
                account_reference: "sandbox-ok-a".into(),
                ..review("v-2", "ann", 1)
            },
            review("v-3", "ann", 5),
        ] {
            let refused = admin.verify_payout_account(stale).await.unwrap_err();
            assert_eq!(
                refused.code(),
                Code::FailedPrecondition,
                "on {}",
                db.backend()
            );
            assert_eq!(reason(&refused), "PAYOUT_ACCOUNT_CHANGED");
        }
        assert_eq!(
            creator(&mut admin, "ann")
                .await
                .payout_account
                .unwrap()
                .verification_status,
            pb::VerificationStatus::Pending as i32,
            "nothing verified"
        );
        let verified = account_reviewed(&mut admin, review("v-4", "ann", 4)).await;
        assert_eq!(
            verified.verification_status,
            pb::VerificationStatus::Verified as i32
        );
        assert_eq!(verified.version, 4, "a review does not change the version");
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_one_who_set_the_account_cannot_verify_it() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        // ann is a creator and also an operator: she may set her own account...
        let mut ann_admin = c.with(Bearer::new(&ovation_testkit::token(
            "ann",
            &[Role::Creator, Role::Admin],
        )));
        let account = ann_with_an_account(&mut ann_admin, "sandbox-ok-ann").await;
        // ...but not verify it.
        let own = ann_admin
            .verify_payout_account(review("v-own", "ann", account.version))
            .await
            .unwrap_err();
        assert_eq!(own.code(), Code::PermissionDenied, "on {}", db.backend());
        assert_eq!(
            creator(&mut ann_admin, "ann")
                .await
                .payout_account
                .unwrap()
                .verification_status,
            pb::VerificationStatus::Pending as i32
        );
        // Rejecting her own account is allowed (it sends no money anywhere); a second
        // operator verifies.
        let rejected = account_reviewed(
            &mut ann_admin,
            pb::VerifyPayoutAccountRequest {
                decision: pb::VerificationStatus::Rejected as i32,
                ..review("r-own", "ann", account.version)
            },
        )
        .await;
        assert_eq!(
            rejected.verification_status,
            pb::VerificationStatus::Rejected as i32
        );
        let mut other = c.with(Bearer::role("admin-2", Role::Admin));
        let verified =
            account_reviewed(&mut other, review("v-other", "ann", account.version)).await;
        assert_eq!(
            (verified.verification_status, verified.reviewed_by.as_str()),
            (pb::VerificationStatus::Verified as i32, "admin-2")
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn with_authentication_off_nobody_has_an_identity_to_apply_four_eyes_to() {
    let catalog = start_catalog().await;
    let db = TestDatabase::sqlite();
    let mut config = payout_config(
        db.url(),
        &catalog.running.endpoint(),
        std::sync::Arc::new(ovation_payout::provider::SandboxProvider::in_memory()),
    );
    config.server.args.auth.insecure_no_auth = true;
    let running = start_payout(config).await;
    let mut anyone = client(&running, Bearer::none()).await;
    let account = ann_with_an_account(&mut anyone, "sandbox-ok").await;
    assert_eq!(account.set_by, "anonymous");
    let verified = account_reviewed(&mut anyone, review("v", "ann", account.version)).await;
    assert_eq!(
        verified.verification_status,
        pb::VerificationStatus::Verified as i32
    );
    running.stop().await.unwrap();
}
