//! The history: what happened per interval, in an embedded SQLite database, for reports.
pub mod model;
pub mod query;
pub mod schema;
pub mod store;
pub mod tap;
#[cfg(test)]
mod test_support;
