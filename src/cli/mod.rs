//! Command-line parsing and output (placeholder).
