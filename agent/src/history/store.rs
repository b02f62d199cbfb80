//! The SQLite store of interval records.
