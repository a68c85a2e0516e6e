//! The `compare` benchmark: litemux against the ways Rust services reach SQLite today.
//!
//! Run it from the repository root:
//!
//! ```text
//! cargo bench -p litemux-bench --bench compare                 # full mode
//! cargo bench -p litemux-bench --bench compare -- --quick      # short mode
//! cargo bench -p litemux-bench --bench compare -- --only c64 --contestants diesel_sync,litemux
//! ```
//!
//! # How it measures
//!
//! * One invocation runs every selected workload; for each workload every selected contestant
//!   runs back to back, so the ratios to `diesel_sync` come from the same conditions.
//! * Every (workload, contestant) run gets a fresh copy of one seeded database (the same schema,
//!   10,000 users, the same pragmas), so earlier inserts never change a later run.
//! * A run lasts a fixed **duration**: a warm-up whose operations are not counted, then the
//!   measured window. Operations that start inside the window are counted; throughput divides
//!   them by the time from the window's start to the moment the last of them finished.
//! * Latencies are per operation, taken around the call (for async contestants, around the
//!   `.await`, so scheduling is included), and kept in a log-linear histogram (about 3%
//!   precision) rather than a growing list, so recording does not distort memory figures.
//! * Every run happens in a fresh child process (this binary re-executed with `--child`), so
//!   nothing one contestant leaves behind in the process reaches the next: allocator arenas,
//!   threads, and SQLite's process-wide configuration, which litemux sets at its first open
//!   (`litemux::sqlite_library`) and which would otherwise depend on who opened SQLite first.
//!   Each child reports its peak resident set (`VmHWM` from `/proc/self/status`), shown for
//!   the workloads where memory is the question (the `*_c64` ones and `scan_10k`).
//!   That figure covers the whole child: the runtime, connections, caches and the benchmark's
//!   own fixed-size bookkeeping, which is the same for every contestant.
//!
//! See [`contestants`] for how each contestant is set up, and [`workload`] for what each workload
//! does.

pub mod cli;
pub mod contestants;
pub mod data;
pub mod driver;
pub mod http;
pub mod report;
pub mod rng;
pub mod rss;
pub mod runner;
pub mod stats;
pub mod workload;

use std::process::ExitCode;

/// Entry point of the `compare` bench binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::Command::parse(&args) {
        Ok(cli::Command::Compare(config)) => runner::compare(&config),
        Ok(cli::Command::Child(spec)) => rss::child_main(&spec),
        Ok(cli::Command::List) => {
            runner::list();
            ExitCode::SUCCESS
        }
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
