-- The W3C traceparent of the request that started each saga, so a saga resumed by the
-- recovery loop (after a crash or a lease takeover) continues the same trace. Empty when
-- the request carried no trace.
ALTER TABLE sagas ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
