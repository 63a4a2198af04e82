//! Client-computed stats.
