//! The operators' views over the whole ledger: the summary that proves I1 and I2, the
//! debits (what gifting's sagas actually spent, to reconcile against them) and the
//! clawback orders of reversed purchases (I6).

use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{ResourceId, TimeWindow};

use crate::domain::ClawbackOrderState;
use crate::ledger::WalletError;
use crate::store::{self, ClawbackOrderRow, DebitRow, LedgerSummary};

/// The ledger-wide figures, all as of one instant.
pub async fn ledger_summary(db: &Db) -> Result<LedgerSummary, WalletError> {
    // One transaction, so every figure is as of the same instant.
    let mut tx = db.begin_write().await?;
    let summary = store::ledger_summary(&mut tx).await?;
    drop(tx);
    Ok(summary)
}

/// The debits of these operation ids (unknown ids are left out), oldest first.
pub async fn debits_by_id(
    conn: &mut Conn,
    ids: &[ResourceId],
) -> Result<Vec<DebitRow>, WalletError> {
    let mut debits = Vec::new();
    for id in ids {
        if let Some(d) = store::get_debit(conn, id.as_str()).await? {
            debits.push(d);
        }
    }
    debits.sort_by(|a, b| (a.created_at, &a.operation_id).cmp(&(b.created_at, &b.operation_id)));
    Ok(debits)
}

/// Debits after (created_at, operation_id) `after`, created in `window`, oldest first.
pub async fn debits(
    conn: &mut Conn,
    after: Option<(i64, String)>,
    window: TimeWindow,
    limit: i64,
) -> Result<Vec<DebitRow>, WalletError> {
    Ok(store::list_debits(conn, after, window, limit).await?)
}

/// Clawback orders of reversed purchases (one purchase's, or all; one state, or all)
/// after (created_at, clawback id) `after`, oldest first (I6).
pub async fn clawback_orders(
    conn: &mut Conn,
    purchase_id: Option<&ResourceId>,
    state: Option<ClawbackOrderState>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<ClawbackOrderRow>, WalletError> {
    Ok(store::list_clawback_orders(
        conn,
        purchase_id.map(ResourceId::as_str),
        state,
        after,
        limit,
    )
    .await?)
}
