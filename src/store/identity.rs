//! The database's identity: a random id written once by its migration
//! (`2026-12-10-000001_database_identity`) and read by every node at start.
//!
//! Why: membership lives in etcd and work in the database; two deployments sharing one etcd and
//! cluster name (the default `rota`) joined one ring, and applications were released to nodes
//! that ran on another database and so never ran them. Every member record carries this id, and
//! a node never places work on a member whose id differs (docs/design.md, "Cluster identity").
//!
//! Must never: write the id (only the migration does), or invent one when the row is missing.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::{AnyConnection, StoreError};

/// A database's identity, as carried in member records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct DatabaseId(pub String);

impl std::fmt::Display for DatabaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
}

/// The database's identity; an error naming the fix when its migration has not run.
pub fn database_id(conn: &mut AnyConnection) -> Result<DatabaseId, StoreError> {
    let rows: Vec<Row> = diesel::sql_query("SELECT id FROM database_identity").load(conn).map_err(|e| {
        StoreError::Identity(format!(
            "cannot read the database's identity (table database_identity): {e}; apply the migrations \
             (`rota migrate`, or start without --no-migrate)"
        ))
    })?;
    match rows.into_iter().next() {
        Some(r) if !r.id.is_empty() => Ok(DatabaseId(r.id)),
        _ => Err(StoreError::Identity(
            "the table database_identity has no row: it is written once by its migration and never by hand; \
             restore it from a backup of this database (a new id would make this database another deployment's)"
                .into(),
        )),
    }
}
