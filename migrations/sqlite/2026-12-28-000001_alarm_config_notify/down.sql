-- PostgreSQL only (NOTIFY when an alarm channel or rule changes); a SQLite node reads them on its
-- own schedule. Kept so that both backends ship the same list of migrations.
SELECT 1;
