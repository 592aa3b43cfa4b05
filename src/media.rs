//! Media: magic bytes, dimensions, hashing, output naming, atomic writes (placeholder).
