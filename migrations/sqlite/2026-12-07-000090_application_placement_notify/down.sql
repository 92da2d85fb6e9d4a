-- PostgreSQL only (NOTIFY when an application's selector or traffic group changes); a SQLite
-- node applies the changes it serves at once and the others at its reconciliation. Kept so that
-- both backends ship the same list of migrations.
SELECT 1;
