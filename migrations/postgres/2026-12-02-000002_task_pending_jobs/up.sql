-- Pending jobs by id, apart from pending commands. The claim reads jobs in id order and
-- commands by their application's head (store/claim.rs, claim_next_pg); without this index
-- the jobs part walked every pending command too: 19,000 rows and ~70 ms per claim behind a
-- backlog of 20,000 commands (docs/benchmarks.md).
CREATE INDEX task_pending_job_idx ON task (id) WHERE status = 'pending' AND (app_id IS NULL OR action = 'run');
