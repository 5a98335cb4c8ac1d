-- Gifting: the durable gift saga, and the transactional outbox that feeds gift history,
-- leaderboards and the live gift feed. Portable SQL (PostgreSQL and SQLite).

-- One row per gift saga, keyed by the caller's idempotency key. Every step is persisted
-- before (step, attempts) and after (its result) it runs; a replica drives a saga only
-- while it holds the lease.
CREATE TABLE sagas (
    saga_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    message TEXT NOT NULL,
    -- the quote recorded at send time (0 until resolved)
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
    completed_at_ms BIGINT
);
CREATE INDEX sagas_due ON sagas (status, next_attempt_at_ms);
CREATE INDEX sagas_sender ON sagas (sender_user_id, created_at_ms);
CREATE INDEX sagas_creator ON sagas (creator_id, created_at_ms);
CREATE INDEX sagas_stream ON sagas (stream_id, created_at_ms);
CREATE INDEX sagas_created ON sagas (created_at_ms, saga_id);

-- The outbox: one event per COMPLETED saga, written in the transaction that completes it
-- (so an event is never lost and never shown for a gift that did not complete), numbered
-- per stream for the live feed.
CREATE TABLE stream_feeds (
    stream_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
CREATE TABLE gift_events (
    stream_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    saga_id TEXT NOT NULL UNIQUE REFERENCES sagas (saga_id),
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
CREATE INDEX gift_events_sender ON gift_events (stream_id, sender_user_id);

-- Operator actions on sagas: who, what, why.
CREATE TABLE saga_actions (
    action_id TEXT PRIMARY KEY,
    saga_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
