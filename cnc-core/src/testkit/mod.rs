//! The DbController conformance suite (being written).
