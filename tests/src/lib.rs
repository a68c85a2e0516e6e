//! Helpers shared by the cross-crate test suites in this folder.
//!
//! The suites themselves live in `reliability/` (one module per kind of check); child
//! processes they drive are the binaries in `src/bin/`.
