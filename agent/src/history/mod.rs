//! The history: what happened per interval, in an embedded SQLite database, for reports.
pub mod model;
pub mod store;
