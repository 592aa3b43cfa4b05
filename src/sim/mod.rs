//! `hili sim`: a faithful offline simulator of the Hili API (placeholder, filled by its owner).
