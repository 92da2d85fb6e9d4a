-- Hostile input (docs/sql.md, tests/hostile.rs): values the dispatcher cannot work with are refused
-- at INSERT, with the constraint named, instead of stopping the queue behind them.
-- NOT VALID: rows already in the table are not checked; every new or changed row is.

-- A pending row must have an attempt left: the claim counts one more (`attempts + 1`), which for
-- `attempts = 2147483647` overflowed and failed every claim round of the node. Fan-out parents
-- (`stage` set) go back to pending whatever their count (docs/jobs.md), so they are exempt.
ALTER TABLE task ADD CONSTRAINT task_pending_has_attempt_left
    CHECK (status <> 'pending' OR stage IS NOT NULL OR attempts < max_attempts) NOT VALID;

-- Times between the years 1 and 9999: `-infinity`, `infinity` and years beyond chrono's range
-- could be stored but not read back, so a due row made every claim of its batch fail.
ALTER TABLE task ADD CONSTRAINT task_times_in_range CHECK (
    run_after BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'
    AND created_at BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'
    AND (claimed_at IS NULL OR claimed_at BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999')
    AND (finished_at IS NULL OR finished_at BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999')
) NOT VALID;
