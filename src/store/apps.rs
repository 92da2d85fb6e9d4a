//! Queries on `application`.

use diesel::prelude::*;

use super::models::{Application, NewApplication};
use super::schema::application;
use super::{AnyConnection, StoreError};

/// Insert an application; returns its id.
pub fn insert_application(conn: &mut AnyConnection, new: &NewApplication) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(application::table).values(new).returning(application::id).get_result(conn)?)
}

/// The application with this id, if any.
pub fn find_application(conn: &mut AnyConnection, id: i64) -> Result<Option<Application>, StoreError> {
    Ok(application::table.find(id).select(Application::as_select()).first(conn).optional()?)
}
