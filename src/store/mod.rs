//! The SQLite store (placeholder, filled by its owner).
