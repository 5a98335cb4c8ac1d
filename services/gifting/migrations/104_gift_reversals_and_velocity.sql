-- Issue 14: admin reversals of completed gifts (fraud review), the feed's REVERSED events,
-- and the lock rows of the gift velocity limit. Portable SQL (PostgreSQL and SQLite).

-- One reversal per gift: keyed by the saga id, so a second reversal of a gift cannot be
-- recorded, whatever idempotency key asks for it. Recorded PENDING (with the stream's
-- REVERSED event, in one transaction), then driven to DONE by the saga driver under a
-- lease of its own, every write fenced by it as a saga's are: step 1 claws the diamonds
-- back in payout, step 2 (only with return_coins) refunds the coins in wallet.
CREATE TABLE gift_reversals (
    saga_id TEXT PRIMARY KEY REFERENCES sagas (saga_id),
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    return_coins BIGINT NOT NULL CHECK (return_coins IN (0, 1)),
    -- 1 PENDING, 2 DONE, 3 NEEDS_OPERATOR
    state BIGINT NOT NULL CHECK (state BETWEEN 1 AND 3),
    -- 1 claw back diamonds, 2 return coins, 3 done
    step BIGINT NOT NULL CHECK (step BETWEEN 1 AND 3),
    clawed_back_diamonds BIGINT NOT NULL CHECK (clawed_back_diamonds >= 0),
    returned_coins BIGINT NOT NULL CHECK (returned_coins >= 0),
    attempts BIGINT NOT NULL,
    unexpected_failures BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    done_at_ms BIGINT
);
CREATE INDEX gift_reversals_due ON gift_reversals (state, next_attempt_at_ms);

-- The feed now says what happened: 1 SENT (a gift completed), 2 REVERSED (an admin reversed
-- it). A saga has at most one event of each kind, numbered in its stream's one sequence.
-- SQLite cannot drop the inline UNIQUE (saga_id) of migration 103, so the table is rebuilt
-- as there; every existing event is a SENT one.
CREATE TABLE gift_events_v3 (
    stream_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    saga_id TEXT NOT NULL REFERENCES sagas (saga_id),
    sender_user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    gift_version BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    coins BIGINT NOT NULL,
    diamonds BIGINT NOT NULL,
    message TEXT NOT NULL,
    completed_at_ms BIGINT NOT NULL,
    kind BIGINT NOT NULL DEFAULT 1 CHECK (kind IN (1, 2)),
    PRIMARY KEY (stream_id, seq),
    CONSTRAINT gift_events_saga_kind UNIQUE (saga_id, kind)
);
INSERT INTO gift_events_v3 (stream_id, seq, saga_id, sender_user_id, creator_id, gift_id,
    gift_version, quantity, coins, diamonds, message, completed_at_ms, kind)
SELECT stream_id, seq, saga_id, sender_user_id, creator_id, gift_id,
    gift_version, quantity, coins, diamonds, message, completed_at_ms, 1
FROM gift_events;
DROP TABLE gift_events;
ALTER TABLE gift_events_v3 RENAME TO gift_events;
CREATE INDEX gift_events_sender ON gift_events (stream_id, sender_user_id);

-- The gift velocity limit (OVATION_GIFTING_GIFTS_PER_SENDER_CREATOR_PER_MINUTE_MAX) counts a
-- sender's sagas to a creator over the last minute when a new one is recorded. On
-- PostgreSQL (READ COMMITTED) two transactions could both count before either inserts, so
-- the recording transaction first locks the pair's row here (an upsert): concurrent sends
-- of one pair queue on it, and each counts what the one before committed. SQLite's write
-- transaction already serializes them. Rows idle for longer than the window are pruned.
CREATE TABLE gift_velocity_locks (
    sender_user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    last_send_at_ms BIGINT NOT NULL,
    PRIMARY KEY (sender_user_id, creator_id)
);
CREATE INDEX gift_velocity_locks_idle ON gift_velocity_locks (last_send_at_ms);
