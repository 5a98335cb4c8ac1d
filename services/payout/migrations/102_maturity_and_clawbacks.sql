-- Issue 14: diamonds mature before they can be cashed out, and chargebacks claw them back.
--
-- A credit now posts to the creator's pending account (creator_pending:<id>) and keeps in
-- credits.pending_diamonds what of it is still pending; a MATURE entry moves due credits to
-- available. A clawback (table clawbacks) takes diamonds from pending, then available, into
-- the system sink system:clawback; what it cannot take becomes creator_balances.debt_diamonds
-- (outside the ledger, like the wallet's coin debt), settled first by later credits.
-- lifetime_earned = pending + available + held + paid out.
--
-- The CHECKs on ledger_accounts.kind, journal_entries.kind and the balances' identity
-- change, and SQLite cannot alter a CHECK: those tables (and postings, which references
-- two of them) are rebuilt as *_v2 with the new CHECKs, rows copied, the old ones dropped
-- referencing-first, and the new ones renamed (SQLite rewrites the other tables' foreign
-- keys to the new names on rename; PostgreSQL's follow the table). One text, both engines.
-- Rows written before keep their meaning: every credit so far is matured (pending 0), no
-- creator owes anything.

CREATE TABLE ledger_accounts_v2 (
    account_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('CREATOR', 'CREATOR_HELD', 'CREATOR_PENDING',
                                       'GIFT_ISSUANCE', 'PAID_OUT', 'CLAWBACK')),
    creator_id TEXT REFERENCES creators (creator_id),
    CHECK ((kind IN ('CREATOR', 'CREATOR_HELD', 'CREATOR_PENDING')) = (creator_id IS NOT NULL))
);

CREATE TABLE journal_entries_v2 (
    entry_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('CREDIT', 'HOLD', 'CAPTURE', 'RELEASE', 'MATURE',
                                       'CLAWBACK', 'SETTLE_DEBT')),
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    reference TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE postings_v2 (
    entry_id TEXT NOT NULL REFERENCES journal_entries_v2 (entry_id),
    account_id TEXT NOT NULL REFERENCES ledger_accounts_v2 (account_id),
    amount_diamonds BIGINT NOT NULL CHECK (amount_diamonds <> 0),
    PRIMARY KEY (entry_id, account_id)
);

CREATE TABLE creator_balances_v2 (
    creator_id TEXT PRIMARY KEY REFERENCES creators (creator_id),
    pending_diamonds BIGINT NOT NULL CHECK (pending_diamonds >= 0),
    available_diamonds BIGINT NOT NULL CHECK (available_diamonds >= 0),
    held_diamonds BIGINT NOT NULL CHECK (held_diamonds >= 0),
    lifetime_earned_diamonds BIGINT NOT NULL
        CHECK (lifetime_earned_diamonds BETWEEN 0 AND 1000000000000000000),
    paid_out_diamonds BIGINT NOT NULL CHECK (paid_out_diamonds >= 0),
    debt_diamonds BIGINT NOT NULL CHECK (debt_diamonds >= 0),
    clawed_back_diamonds BIGINT NOT NULL CHECK (clawed_back_diamonds >= 0),
    CHECK (lifetime_earned_diamonds
           = pending_diamonds + available_diamonds + held_diamonds + paid_out_diamonds)
);

INSERT INTO ledger_accounts_v2 (account_id, kind, creator_id)
SELECT account_id, kind, creator_id FROM ledger_accounts;
INSERT INTO ledger_accounts_v2 (account_id, kind, creator_id)
SELECT 'creator_pending:' || creator_id, 'CREATOR_PENDING', creator_id FROM creators;
INSERT INTO ledger_accounts_v2 (account_id, kind, creator_id)
VALUES ('system:clawback', 'CLAWBACK', NULL);

INSERT INTO journal_entries_v2 (entry_id, kind, creator_id, reference, created_at_ms)
SELECT entry_id, kind, creator_id, reference, created_at_ms FROM journal_entries;

INSERT INTO postings_v2 (entry_id, account_id, amount_diamonds)
SELECT entry_id, account_id, amount_diamonds FROM postings;

INSERT INTO creator_balances_v2 (creator_id, pending_diamonds, available_diamonds,
    held_diamonds, lifetime_earned_diamonds, paid_out_diamonds, debt_diamonds,
    clawed_back_diamonds)
SELECT creator_id, 0, available_diamonds, held_diamonds, lifetime_earned_diamonds,
    paid_out_diamonds, 0, 0
FROM creator_balances;

-- Referencing first: postings references journal_entries and ledger_accounts. Dropping a
-- table drops its indexes (postings_by_account) with it.
DROP TABLE postings;
DROP TABLE journal_entries;
DROP TABLE ledger_accounts;
DROP TABLE creator_balances;

ALTER TABLE ledger_accounts_v2 RENAME TO ledger_accounts;
ALTER TABLE journal_entries_v2 RENAME TO journal_entries;
ALTER TABLE postings_v2 RENAME TO postings;
ALTER TABLE creator_balances_v2 RENAME TO creator_balances;
CREATE INDEX postings_by_account ON postings (account_id);

-- What of each credit is still pending (0 once matured or clawed back), and what of it
-- went to settle the creator's debt instead (never pending).
ALTER TABLE credits ADD COLUMN pending_diamonds BIGINT NOT NULL DEFAULT 0
    CHECK (pending_diamonds >= 0);
ALTER TABLE credits ADD COLUMN debt_settled_diamonds BIGINT NOT NULL DEFAULT 0
    CHECK (debt_settled_diamonds >= 0);
-- Maturation and clawbacks look only at credits still pending.
CREATE INDEX credits_pending ON credits (creator_id, created_at_ms, operation_id)
    WHERE pending_diamonds > 0;

-- Diamonds taken back for coins attributed to a gift's credit, once per clawback_id.
-- diamonds = floor(coins × creator_share_bps / 10000) = from pending + from available + to
-- debt; coins ≤ coins_requested (capped by what earlier clawbacks left of the credit).
CREATE TABLE clawbacks (
    clawback_id TEXT PRIMARY KEY CHECK (length(clawback_id) BETWEEN 1 AND 128),
    operation_id TEXT NOT NULL REFERENCES credits (operation_id),
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    cause TEXT NOT NULL CHECK (cause IN ('PURCHASE_REVERSAL', 'GIFT_REVERSAL')),
    cause_id TEXT NOT NULL,
    coins_requested BIGINT NOT NULL CHECK (coins_requested BETWEEN 1 AND 1000000000000),
    coins BIGINT NOT NULL CHECK (coins BETWEEN 0 AND coins_requested),
    creator_share_bps BIGINT NOT NULL CHECK (creator_share_bps BETWEEN 0 AND 10000),
    diamonds BIGINT NOT NULL CHECK (diamonds BETWEEN 0 AND coins),
    from_pending_diamonds BIGINT NOT NULL CHECK (from_pending_diamonds >= 0),
    from_available_diamonds BIGINT NOT NULL CHECK (from_available_diamonds >= 0),
    to_debt_diamonds BIGINT NOT NULL CHECK (to_debt_diamonds >= 0),
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    CHECK (diamonds = from_pending_diamonds + from_available_diamonds + to_debt_diamonds)
);
CREATE INDEX clawbacks_by_credit ON clawbacks (operation_id);
CREATE INDEX clawbacks_by_creator ON clawbacks (creator_id, created_at_ms, clawback_id);
CREATE INDEX clawbacks_by_time ON clawbacks (created_at_ms, clawback_id);

-- Whether the creator owed clawed-back diamonds when the payout was handed to the
-- provider (the hand-over refuses to send then, so it stays 0; the summary counts it).
ALTER TABLE payouts ADD COLUMN sent_in_debt BIGINT NOT NULL DEFAULT 0
    CHECK (sent_in_debt IN (0, 1));
