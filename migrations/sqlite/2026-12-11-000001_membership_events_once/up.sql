-- A membership change is recorded once (docs/membership.md, "Membership events"). Each node
-- records its own joins, re-joins and fences; every surviving member records a departure it
-- sees (and a node leaving gracefully records its own first), so the database keeps one row per
-- change: the node concerned, the change (a departure is one change whether it was seen as
-- `left` or `lost`), and `data.revision` (the session the change ends or begins: an etcd
-- revision, or the standalone lock's epoch). Rows without `data.revision` are not constrained.
CREATE UNIQUE INDEX event_membership_once ON event (
    node_id,
    (CASE WHEN kind IN ('membership.left', 'membership.lost') THEN 'membership.departed' ELSE kind END),
    json_extract(data, '$.revision')
) WHERE kind IN ('membership.joined', 'membership.rejoined', 'membership.fenced', 'membership.left', 'membership.lost');
