-- Idempotency keys are the sender's own (issue 11, item 3): two senders choosing the same
-- SendGift key must not collide, so the key is unique per (sender_user_id, idempotency_key)
-- instead of globally.
--
-- SQLite cannot drop the inline UNIQUE of migration 100, so the table is rebuilt (one text
-- for both engines): a new table with every column of migrations 100-102, the rows copied,
-- the old table dropped, the new one renamed, its indexes recreated. gift_events references
-- sagas, so it is rebuilt the same way first: the old sagas table is then dropped with
-- nothing referring to it (PostgreSQL refuses otherwise; SQLite, with foreign keys on,
-- would check the implicit delete against it), and renaming sagas_v2 carries the new
-- gift_events' reference along (SQLite rewrites it, PostgreSQL refers by identity). Every
-- existing row keeps its values; a globally unique key is unique per sender too.
-- (On PostgreSQL the primary keys keep the names sagas_v2_pkey and gift_events_v2_pkey.)

CREATE TABLE sagas_v2 (
    saga_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    message TEXT NOT NULL,
    gift_version BIGINT NOT NULL,
    unit_price_coins BIGINT NOT NULL,
    total_coins BIGINT NOT NULL,
    creator_share_bps BIGINT NOT NULL CHECK (creator_share_bps BETWEEN 0 AND 10000),
    economy_version BIGINT NOT NULL,
    status BIGINT NOT NULL CHECK (status BETWEEN 1 AND 5),
    step BIGINT NOT NULL CHECK (step BETWEEN 1 AND 5),
    coins_spent BIGINT NOT NULL CHECK (coins_spent >= 0),
    diamonds_credited BIGINT NOT NULL CHECK (diamonds_credited >= 0),
    sender_balance_after_coins BIGINT,
    rejection_reason BIGINT NOT NULL,
    rejection_detail TEXT NOT NULL,
    refund_started BIGINT NOT NULL CHECK (refund_started IN (0, 1)),
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    trace_parent TEXT NOT NULL DEFAULT '',
    unexpected_failures BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT sagas_sender_idempotency_key UNIQUE (sender_user_id, idempotency_key)
);
INSERT INTO sagas_v2 (saga_id, idempotency_key, fingerprint, sender_user_id, creator_id,
    stream_id, gift_id, quantity, message, gift_version, unit_price_coins, total_coins,
    creator_share_bps, economy_version, status, step, coins_spent, diamonds_credited,
    sender_balance_after_coins, rejection_reason, rejection_detail, refund_started, attempts,
    last_error, next_attempt_at_ms, lease_owner, lease_expires_at_ms, created_at_ms,
    updated_at_ms, completed_at_ms, trace_parent, unexpected_failures)
SELECT saga_id, idempotency_key, fingerprint, sender_user_id, creator_id,
    stream_id, gift_id, quantity, message, gift_version, unit_price_coins, total_coins,
    creator_share_bps, economy_version, status, step, coins_spent, diamonds_credited,
    sender_balance_after_coins, rejection_reason, rejection_detail, refund_started, attempts,
    last_error, next_attempt_at_ms, lease_owner, lease_expires_at_ms, created_at_ms,
    updated_at_ms, completed_at_ms, trace_parent, unexpected_failures
FROM sagas;

CREATE TABLE gift_events_v2 (
    stream_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    saga_id TEXT NOT NULL UNIQUE REFERENCES sagas_v2 (saga_id),
    sender_user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    gift_version BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    coins BIGINT NOT NULL,
    diamonds BIGINT NOT NULL,
    message TEXT NOT NULL,
    completed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
INSERT INTO gift_events_v2 (stream_id, seq, saga_id, sender_user_id, creator_id, gift_id,
    gift_version, quantity, coins, diamonds, message, completed_at_ms)
SELECT stream_id, seq, saga_id, sender_user_id, creator_id, gift_id,
    gift_version, quantity, coins, diamonds, message, completed_at_ms
FROM gift_events;

DROP TABLE gift_events;
DROP TABLE sagas;
ALTER TABLE sagas_v2 RENAME TO sagas;
ALTER TABLE gift_events_v2 RENAME TO gift_events;

CREATE INDEX sagas_due ON sagas (status, next_attempt_at_ms);
CREATE INDEX sagas_sender ON sagas (sender_user_id, created_at_ms);
CREATE INDEX sagas_creator ON sagas (creator_id, created_at_ms);
CREATE INDEX sagas_stream ON sagas (stream_id, created_at_ms);
CREATE INDEX sagas_created ON sagas (created_at_ms, saga_id);
CREATE INDEX gift_events_sender ON gift_events (stream_id, sender_user_id);
