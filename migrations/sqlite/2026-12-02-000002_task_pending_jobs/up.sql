-- PostgreSQL only (an index for its claim of jobs; SQLite claims with a per-row check along
-- the id order). Kept so that both backends ship the same list of migrations.
SELECT 1;
