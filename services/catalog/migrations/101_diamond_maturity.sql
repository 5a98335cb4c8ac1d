-- Issue 14: credited diamonds stay pending for diamond_maturity_hours before they can be
-- cashed out (0: at once, at most a year). Versions written before keep 0, which is what
-- they meant: diamonds were cashable at once.
ALTER TABLE economy_versions ADD COLUMN diamond_maturity_hours BIGINT NOT NULL DEFAULT 0
    CHECK (diamond_maturity_hours BETWEEN 0 AND 8760);
