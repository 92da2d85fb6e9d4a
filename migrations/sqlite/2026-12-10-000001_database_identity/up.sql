-- The database's identity: a random id written once, here, and never changed. Every node puts it
-- in its member record in etcd, so that the nodes of two deployments that share an etcd (and a
-- cluster name) never share a ring (store::identity; docs/design.md, "Cluster identity").
-- One row at most: the key can only be 1.
CREATE TABLE database_identity (
    one INTEGER PRIMARY KEY NOT NULL DEFAULT 1 CHECK (one = 1),
    id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO database_identity (id) VALUES (lower(hex(randomblob(16))));
