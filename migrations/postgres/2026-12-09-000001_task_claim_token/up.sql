-- A token per claim (docs/design.md#i3): every claim writes a random `claim_token`, and every write
-- as the claim's holder (outcome, give-back, a fan-out parent's stage and children) is conditional
-- on it besides `owner_node` and `owner_epoch`. Why: after a failover onto an asynchronous replica
-- the promoted server's sequence hands out again the ids of the transactions the old primary had
-- not shipped; a node that claimed row 42 on the old primary and row 42 (a different task) on the
-- new one, at the same membership epoch (etcd's, unchanged by a database failover), could write
-- the first task's late outcome onto the second. Nullable, no default: added without rewriting
-- the table; rows claimed before it have none, and every write compares the token it was given.
ALTER TABLE task ADD COLUMN claim_token BIGINT;
