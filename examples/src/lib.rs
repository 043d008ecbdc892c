//! Examples live next to this crate's Cargo.toml; this library is empty.
