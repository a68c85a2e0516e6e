//! `litemux_diesel`: placeholder for diesel over litemux (`litemux_diesel::LitemuxConnection`).
//!
//! Nothing is measured for it yet and the report lists it as not measured: no fake numbers. To
//! add it, this module becomes an [`AsyncBackend`](super::AsyncBackend) that runs the
//! `diesel_models` queries on `LitemuxConnection`s (in diesel-async's deadpool pool, like
//! `diesel_async_wrapper`, which `LitemuxConnection` supports as a `PoolableConnection`), the
//! bench gains an optional dependency on the `litemux-diesel` package, [`MISSING`] goes, and
//! one line in [`all`](super::all) registers it.

/// The contestant's name and why this build does not have it.
pub(crate) const MISSING: (&str, &str) = (
    "litemux_diesel",
    "its contestant module is a placeholder until the litemux-diesel adapter is ready",
);
