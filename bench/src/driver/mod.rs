//! Runs one workload against one contestant and measures it.
//!
//! [`threads`] drives a [`SyncBackend`](crate::contestants::SyncBackend) with one OS thread per
//! task; [`tasks`] drives an [`AsyncBackend`](crate::contestants::AsyncBackend) with one tokio
//! task per task. Both follow the same loop: draw the next operation, stop if the deadline has
//! passed, time the operation, and keep it if it started inside the measured window.

pub mod tasks;
pub mod threads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::contestants::BatchMode;
use crate::workload::Workload;

/// How long each run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Time spent running the workload before anything is counted: fills caches, lets pools
    /// open their connections and lets statement caches fill.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// What to run.
    pub workload: Workload,
    /// The run's own fresh copy of the seeded database.
    pub db: PathBuf,
    /// How long to run.
    pub plan: Plan,
    /// For `batch_insert_10k`: which of the contestant's batch modes.
    pub batch_mode: BatchMode,
    /// `--tasks`: the task count of the concurrent workloads, instead of their own.
    pub tasks: Option<usize>,
}

impl RunSpec {
    /// The role of every task of this run (see [`Workload::tasks_with`]).
    pub fn roles(&self) -> Vec<crate::workload::TaskRole> {
        self.workload.tasks_with(self.tasks)
    }
}

/// The measured window of one run, fixed once the contestant is open.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Operations starting before this are warm-up.
    pub start: Instant,
    /// No operation starts at or after this.
    pub end: Instant,
}

impl Window {
    /// A window that begins after `plan.warmup` from now.
    pub fn after_warmup(plan: Plan) -> Self {
        let start = Instant::now() + plan.warmup;
        Window {
            start,
            end: start + plan.measure,
        }
    }
}
