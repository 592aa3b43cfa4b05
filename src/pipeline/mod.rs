//! The pipeline workers (placeholder).
