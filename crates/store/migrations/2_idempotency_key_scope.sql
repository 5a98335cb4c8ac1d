-- Idempotency keys belong to the caller that sent them and the RPC they were sent to
-- (docs/economy.md: two callers never collide on a key). SQLite cannot change a primary key in place,
-- so the table is rebuilt; the same text runs on PostgreSQL.
-- Rows from before this migration keep scope '' (they did not record their caller): the
-- store still replays them to a retry of the very same request until they are pruned.
CREATE TABLE idempotency_keys_scoped (
    -- '<principal> <rpc>', e.g. 'user:alice PurchaseCoins' or 'service:gifting DebitCoins'
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response BYTEA,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
INSERT INTO idempotency_keys_scoped (scope, idempotency_key, fingerprint, response, created_at_ms)
    SELECT '', idempotency_key, fingerprint, response, created_at_ms FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_scoped RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at_ms);
