//! Configuration (placeholder, filled by its owner).
