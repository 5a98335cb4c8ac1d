//! What gifting's tests share: the four services with gifting's retries made fast, a gift
//! request, and waiting for a saga to end.

use ovation_gifting::GiftingSettings;
use ovation_proto::gifting as pb;
use ovation_testkit::{GiftingClient, InProcessSuite, TestDatabase, gift_request};

/// Saga steps retried within milliseconds, recovery every 50 ms.
pub fn fast_retries() -> GiftingSettings {
    GiftingSettings {
        retry_base_ms: 10,
        retry_max_ms: 100,
        recovery_interval_ms: 50,
        ..GiftingSettings::default()
    }
}

/// The four services, `db` gifting's database (the others alike), with [`fast_retries`].
pub async fn start(db: TestDatabase) -> InProcessSuite {
    InProcessSuite::start(db, fast_retries()).await
}

/// A gift on "stream-1".
pub fn send(
    key: &str,
    sender: &str,
    creator: &str,
    gift: &str,
    quantity: i32,
) -> pb::SendGiftRequest {
    gift_request("stream-1", key, sender, creator, gift, quantity)
}

/// Sends `request` as `client`'s caller; its receipt (a refusal fails the test).
pub async fn receipt_of(
    client: &mut GiftingClient,
    request: impl tonic::IntoRequest<pb::SendGiftRequest>,
) -> pb::GiftReceipt {
    client
        .send_gift(request)
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
}

/// Polls a saga until it is terminal (bounded), returning its receipt.
pub async fn settled(client: &mut GiftingClient, saga_id: &str) -> pb::GiftReceipt {
    for _ in 0..400 {
        let r = client
            .get_sent_gift(pb::GetSentGiftRequest {
                saga_id: saga_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        if ![
            pb::SagaStatus::Pending as i32,
            pb::SagaStatus::NeedsOperator as i32,
        ]
        .contains(&r.status)
        {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("saga {saga_id} did not settle within 10 s");
}
