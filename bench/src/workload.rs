//! The workloads, and the operation each of their tasks performs next.
//!
//! A workload is a fixed set of tasks, each with a [`TaskRole`]; every task repeats its role's
//! operation until the run's deadline. Sync contestants run one OS thread per task, async
//! contestants one tokio task per task (see [`crate::driver`]).

use std::time::Duration;

use crate::data::{NewPost, SEED_USERS};
use crate::rng::XorShift;

/// Rows written by one `batch_insert_10k` operation.
pub const BATCH_ROWS: usize = 10_000;

/// How long `read_during_write`'s writer keeps its transaction open each time.
pub const HOLD_WRITE: Duration = Duration::from_millis(200);

/// The workloads of the performance issue, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One task: primary-key lookups of users by random id.
    PointReadSeq,
    /// 64 concurrent tasks doing the same lookups.
    PointReadC64,
    /// One task: load all 10,000 users into structs.
    Scan10k,
    /// One task: single-row autocommit inserts.
    InsertSeq,
    /// 32 concurrent tasks: single-row autocommit inserts (lock errors show up as errors).
    InsertC32,
    /// 64 concurrent tasks: 90% point reads, 10% single-row inserts.
    MixedC64,
    /// One task: 10,000 rows inserted one statement at a time inside one transaction.
    BatchInsert10k,
    /// One task keeps a write transaction open for [`HOLD_WRITE`] at a time, again and again,
    /// while 8 tasks do point reads; only the reads are counted.
    ReadDuringWrite,
}

/// What one task of a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRole {
    /// Point reads only.
    PointRead,
    /// Full scans of `users`.
    Scan,
    /// Single-row autocommit inserts into `posts`.
    Insert,
    /// 90% point reads, 10% inserts, drawn at random per operation.
    Mixed,
    /// [`BATCH_ROWS`]-row transactions.
    Batch,
    /// Write transactions held open for [`HOLD_WRITE`]; not counted in throughput or latency.
    HoldWrite,
}

/// One operation. Its rows come from the run's [`sample_posts`], made before the clock starts,
/// so that neither latency nor throughput includes building them.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Look up the user with this id.
    PointRead(i64),
    /// Load every user.
    Scan,
    /// Insert one post in autocommit mode.
    Insert(&'a NewPost),
    /// Insert all these posts in one transaction.
    Batch(&'a [NewPost]),
    /// Begin a write transaction, insert the post, wait, commit.
    HoldWrite(&'a NewPost, Duration),
}

impl Op<'_> {
    /// The posts this operation inserts when it succeeds.
    pub fn posts_written(&self) -> u64 {
        match self {
            Op::PointRead(_) | Op::Scan => 0,
            Op::Insert(_) | Op::HoldWrite(..) => 1,
            Op::Batch(posts) => posts.len() as u64,
        }
    }
}

/// The posts a run inserts: [`BATCH_ROWS`] of them, shared by all its tasks.
///
/// Single inserts pick one at random; a batch inserts all of them. Posts have no unique
/// column, so inserting the same one twice is fine.
pub fn sample_posts() -> Vec<NewPost> {
    let mut rng = XorShift::new(u64::MAX);
    (0..BATCH_ROWS).map(|_| NewPost::random(&mut rng)).collect()
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 8] = [
        Workload::PointReadSeq,
        Workload::PointReadC64,
        Workload::Scan10k,
        Workload::InsertSeq,
        Workload::InsertC32,
        Workload::MixedC64,
        Workload::BatchInsert10k,
        Workload::ReadDuringWrite,
    ];

    /// The name used in the table and by `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PointReadSeq => "point_read_seq",
            Workload::PointReadC64 => "point_read_c64",
            Workload::Scan10k => "scan_10k",
            Workload::InsertSeq => "insert_seq",
            Workload::InsertC32 => "insert_c32",
            Workload::MixedC64 => "mixed_c64",
            Workload::BatchInsert10k => "batch_insert_10k",
            Workload::ReadDuringWrite => "read_during_write",
        }
    }

    /// Looks a workload up by its exact name.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The role of every task, one entry per task.
    pub fn tasks(self) -> Vec<TaskRole> {
        match self {
            Workload::PointReadSeq => vec![TaskRole::PointRead],
            Workload::PointReadC64 => vec![TaskRole::PointRead; 64],
            Workload::Scan10k => vec![TaskRole::Scan],
            Workload::InsertSeq => vec![TaskRole::Insert],
            Workload::InsertC32 => vec![TaskRole::Insert; 32],
            Workload::MixedC64 => vec![TaskRole::Mixed; 64],
            Workload::BatchInsert10k => vec![TaskRole::Batch],
            Workload::ReadDuringWrite => {
                let mut roles = vec![TaskRole::HoldWrite];
                roles.extend([TaskRole::PointRead; 8]);
                roles
            }
        }
    }

    /// The role of every task, with the concurrent workloads (many tasks of one role) run by
    /// `tasks` tasks instead when it is given: how a contestant scales with concurrency.
    pub fn tasks_with(self, tasks: Option<usize>) -> Vec<TaskRole> {
        let roles = self.tasks();
        match (tasks, roles.as_slice()) {
            (Some(n), [first, rest @ ..])
                if !rest.is_empty() && rest.iter().all(|r| r == first) =>
            {
                vec![*first; n]
            }
            _ => roles,
        }
    }

    /// Whether the report shows each contestant's peak memory for this workload.
    pub fn measures_rss(self) -> bool {
        matches!(
            self,
            Workload::PointReadC64 | Workload::MixedC64 | Workload::Scan10k
        )
    }

    /// What one counted operation is, for the table's footnotes.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Scan10k => "one full scan of 10k users",
            Workload::BatchInsert10k => "one 10k-row transaction",
            Workload::ReadDuringWrite => "one point read (the writer is not counted)",
            Workload::MixedC64 => "one read or insert",
            Workload::InsertSeq | Workload::InsertC32 => "one autocommit insert",
            Workload::PointReadSeq | Workload::PointReadC64 => "one point read",
        }
    }
}

impl TaskRole {
    /// Whether this task's operations count towards throughput and latency.
    ///
    /// Errors are counted for every task, so a failing writer still shows.
    pub fn is_measured(self) -> bool {
        self != TaskRole::HoldWrite
    }

    /// Draws this task's next operation, taking rows from `posts` (see [`sample_posts`]).
    pub fn next_op<'a>(self, rng: &mut XorShift, posts: &'a [NewPost]) -> Op<'a> {
        match self {
            TaskRole::PointRead => Op::PointRead(random_user(rng)),
            TaskRole::Scan => Op::Scan,
            TaskRole::Insert => Op::Insert(pick(rng, posts)),
            // 10% writes: one draw in ten.
            TaskRole::Mixed if rng.below(10) == 0 => Op::Insert(pick(rng, posts)),
            TaskRole::Mixed => Op::PointRead(random_user(rng)),
            TaskRole::Batch => Op::Batch(posts),
            TaskRole::HoldWrite => Op::HoldWrite(pick(rng, posts), HOLD_WRITE),
        }
    }
}

/// A random one of `posts`.
fn pick<'a>(rng: &mut XorShift, posts: &'a [NewPost]) -> &'a NewPost {
    &posts[rng.below(posts.len() as u64) as usize]
}

/// A uniformly random id of a seeded user.
fn random_user(rng: &mut XorShift) -> i64 {
    1 + rng.below(SEED_USERS as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_count_override_changes_only_the_concurrent_workloads() {
        assert_eq!(
            Workload::PointReadC64.tasks_with(Some(2)),
            [TaskRole::PointRead; 2]
        );
        assert_eq!(Workload::InsertC32.tasks_with(Some(8)).len(), 8);
        assert_eq!(Workload::PointReadC64.tasks_with(None).len(), 64);
        assert_eq!(Workload::PointReadSeq.tasks_with(Some(8)).len(), 1);
        // The writer and its readers keep their shape.
        assert_eq!(
            Workload::ReadDuringWrite.tasks_with(Some(2)),
            Workload::ReadDuringWrite.tasks()
        );
    }
}
