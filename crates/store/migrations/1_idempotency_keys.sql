-- Shared by every service (docs/economy.md, "Idempotency keys"): one row per idempotency key, holding the fingerprint
-- of the request it was first used with and the encoded response to replay.
-- Portable SQL: the same text runs on PostgreSQL and SQLite.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    -- hex SHA-256 over the operation name and the encoded request
    fingerprint TEXT NOT NULL,
    -- encoded response; NULL while the first request is still in progress
    response BYTEA,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at_ms);
