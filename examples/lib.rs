//! Runnable litemux programs: `cargo run --example NAME` from the repository root.
//!
//! This library exists so the repository's README is compiled and run as doctests (below),
//! keeping its examples true; it also embeds the repository's migrations for them.
#![doc = include_str!("../README.md")]

/// The repository's diesel migrations (`migrations/`: users, posts, comments), embedded.
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations");

#[path = "axum_service/app.rs"]
pub mod axum_service;
