//! The reliability suite: what must hold under crashes, cancellation, bad input and random
//! input. Each module is one kind of check; soak variants are `#[ignore]`d and documented in
//! the README with the command that runs them.

mod bad_input;
mod cancellation;
mod crash;
mod fuzz;
