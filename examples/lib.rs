//! Runnable litemux programs: `cargo run --example NAME` from the repository root.
//!
//! This library holds no code: it exists so the repository's README is compiled and run as
//! doctests (below), keeping its example true.
#![doc = include_str!("../README.md")]
