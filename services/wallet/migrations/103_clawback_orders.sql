-- Clawback of a reversed purchase's spent coins (issue 14; docs/economy.md). The coins a
-- reversal could not take back (its debt) are attributed to the buyer's debits posted after
-- the purchase's credit, oldest first; each gift debit reached gets a clawback order the
-- wallet's worker delivers to payout (ClawbackDiamonds).

-- The purchase's credit entry in the buyer's ledger (journal_entries.user_seq), where the
-- attribution walk starts; NULL until credited. Purchases credited before this migration get
-- it from their Purchase entry (reason 1).
ALTER TABLE purchases ADD COLUMN credited_seq BIGINT;
UPDATE purchases SET credited_seq = (
    SELECT MIN(j.user_seq) FROM journal_entries j
    WHERE j.user_id = purchases.user_id AND j.purchase_id = purchases.purchase_id
      AND j.reason = 1)
WHERE state IN (2, 4);

-- A reversal's attribution: the walk covers the buyer's entries with
-- credited_seq < user_seq <= attribution_end_seq (the last entry before the reversal);
-- attribution_cursor_seq is where the walk is (it may take several bounded transactions);
-- attribution_left_coins are the debt coins not yet attributed. Reversals made before this
-- migration attribute nothing (pending 0).
ALTER TABLE purchases ADD COLUMN attribution_pending BIGINT NOT NULL DEFAULT 0
    CHECK (attribution_pending IN (0, 1));
ALTER TABLE purchases ADD COLUMN attribution_end_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE purchases ADD COLUMN attribution_cursor_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE purchases ADD COLUMN attribution_left_coins BIGINT NOT NULL DEFAULT 0
    CHECK (attribution_left_coins >= 0);
ALTER TABLE purchases ADD COLUMN attributed_coins BIGINT NOT NULL DEFAULT 0
    CHECK (attributed_coins >= 0);
ALTER TABLE purchases ADD COLUMN clawback_order_count BIGINT NOT NULL DEFAULT 0
    CHECK (clawback_order_count >= 0);
ALTER TABLE purchases ADD COLUMN clawback_orders_done_count BIGINT NOT NULL DEFAULT 0
    CHECK (clawback_orders_done_count >= 0);
CREATE INDEX purchases_attribution ON purchases (attribution_pending, reversed_at_ms);

-- Coins of each debit attributed to reversed purchases so far (all reversals together):
-- never more than the debit.
ALTER TABLE debits ADD COLUMN attributed_coins BIGINT NOT NULL DEFAULT 0
    CHECK (attributed_coins >= 0);

-- One per (reversed purchase, gift debit): coins attributed, and its delivery to payout.
-- state: 1 PENDING, 2 APPLIED, 3 NO_CREDIT.
CREATE TABLE clawback_orders (
    clawback_id TEXT PRIMARY KEY,
    purchase_id TEXT NOT NULL REFERENCES purchases (purchase_id),
    operation_id TEXT NOT NULL REFERENCES debits (operation_id),
    user_id TEXT NOT NULL,
    coins BIGINT NOT NULL CHECK (coins > 0),
    reason TEXT NOT NULL,
    state BIGINT NOT NULL CHECK (state BETWEEN 1 AND 3),
    diamonds BIGINT NOT NULL CHECK (diamonds >= 0),
    applied_coins BIGINT NOT NULL CHECK (applied_coins >= 0 AND applied_coins <= coins),
    attempts BIGINT NOT NULL CHECK (attempts >= 0),
    last_error TEXT NOT NULL,
    -- when the worker may next try it (a lease while a delivery is in flight)
    next_attempt_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    done_at_ms BIGINT,
    UNIQUE (purchase_id, operation_id)
);
CREATE INDEX clawback_orders_due ON clawback_orders (state, next_attempt_at_ms);
CREATE INDEX clawback_orders_created ON clawback_orders (created_at_ms, clawback_id);
CREATE INDEX clawback_orders_purchase ON clawback_orders (purchase_id, created_at_ms, clawback_id);
