-- One queue cycle for pgbench (limit.sh): claim up to :batch pending rows, then complete them,
-- as two statements and so two transactions (autocommit), as a queue does. A CTE that claimed
-- and completed in one statement would be one transaction and skip the claim's commit.
--
-- The claim is the UPDATE inside the CTE; the outer SELECT only folds its RETURNING rows into
-- one row, because \gset takes exactly one row. coalesce keeps an empty claim a valid array.
WITH claimed AS (
    UPDATE task SET status = 'running', owner_node = 'x', owner_epoch = 1,
                    attempts = attempts + 1, claimed_at = now()
    WHERE id IN (SELECT id FROM task WHERE status = 'pending' ORDER BY id
                 LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT coalesce(array_agg(id), '{}')::text AS ids FROM claimed
\gset
-- With -M prepared, :ids is sent as a parameter ('{1,2,...}'), not spliced into the text.
UPDATE task SET status = 'succeeded', finished_at = now() WHERE id = ANY (:ids::bigint[]);
