-- Of a step's failed attempts (`attempts`), those that got an unexpected answer: only these
-- spend the step's attempt budget. A peer that is down or shedding load is waited for
-- until the saga's maximum age instead (issue 11).
ALTER TABLE sagas ADD COLUMN unexpected_failures BIGINT NOT NULL DEFAULT 0;
