-- The database's identity: a random id written once, here, and never changed. Every node puts it
-- in its member record in etcd, so that the nodes of two deployments that share an etcd (and a
-- cluster name) never share a ring (store::identity; docs/design.md, "Cluster identity").
-- One row at most: the key can only be TRUE.
CREATE TABLE database_identity (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
INSERT INTO database_identity (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
