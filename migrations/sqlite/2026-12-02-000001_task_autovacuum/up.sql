-- PostgreSQL only (per-table autovacuum settings for `task`); SQLite has no vacuum thresholds.
-- Kept so that both backends ship the same list of migrations.
SELECT 1;
