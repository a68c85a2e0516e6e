//! Drives a blocking contestant: one OS thread and one connection per task.

use std::thread;
use std::time::Instant;

use crate::contestants::{SyncBackend, perform_sync};
use crate::data::NewPost;
use crate::driver::{RunSpec, Window};
use crate::rng::XorShift;
use crate::stats::{Measurement, TaskStats};
use crate::workload::{TaskRole, sample_posts};

/// Runs `spec` on backend `B`.
pub fn run<B: SyncBackend>(spec: &RunSpec) -> Result<Measurement, String> {
    let roles = spec.roles();
    let posts = sample_posts();
    // Connections are opened before the clock starts: opening is not what is measured.
    let connections = roles
        .iter()
        .map(|_| B::connect(&spec.db))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot connect: {error}"))?;
    let window = Window::after_warmup(spec.plan);
    let per_task: Vec<TaskStats> = thread::scope(|scope| {
        let handles: Vec<_> = connections
            .into_iter()
            .zip(roles)
            .enumerate()
            .map(|(index, (conn, role))| {
                let posts = &posts;
                scope.spawn(move || task::<B>(conn, role, index as u64, posts, window))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a benchmark thread panicked"))
            .collect()
    });
    let mut total = TaskStats::new(true);
    per_task.into_iter().for_each(|stats| total.merge(stats));
    Ok(Measurement::from_stats(&total, window.start))
}

/// One task's loop; the connection is closed when it returns.
fn task<B: SyncBackend>(
    mut conn: B::Conn,
    role: TaskRole,
    index: u64,
    posts: &[NewPost],
    window: Window,
) -> TaskStats {
    let mut rng = XorShift::new(index);
    let mut stats = TaskStats::new(role.is_measured());
    loop {
        let op = role.next_op(&mut rng, posts);
        let started = Instant::now();
        if started >= window.end {
            return stats;
        }
        let result = perform_sync::<B>(&mut conn, op);
        stats.record(started, Instant::now(), started >= window.start, result);
    }
}
