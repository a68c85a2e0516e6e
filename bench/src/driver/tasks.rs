//! Drives an async contestant: one shared handle, one tokio task per task, on a multi-thread
//! runtime with one worker per core (tokio's default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contestants::{AsyncBackend, BatchMode, perform_async};
use crate::data::NewPost;
use crate::driver::{RunSpec, Window};
use crate::rng::XorShift;
use crate::stats::{Measurement, TaskStats};
use crate::workload::{TaskRole, sample_posts};

/// How long to wait for leftover blocking work when the runtime shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs `spec` on backend `B`.
pub fn run<B: AsyncBackend>(spec: &RunSpec) -> Result<Measurement, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start tokio: {error}"))?;
    let result = runtime.block_on(measure::<B>(spec));
    // A fresh runtime per run, shut down before the next contestant starts, so no contestant's
    // leftover threads compete with the next one.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

async fn measure<B: AsyncBackend>(spec: &RunSpec) -> Result<Measurement, String> {
    let posts: Arc<[NewPost]> = sample_posts().into();
    let backend = B::open(&spec.db)
        .await
        .map_err(|error| format!("cannot open: {error}"))?;
    let window = Window::after_warmup(spec.plan);
    let handles: Vec<_> = spec
        .roles()
        .into_iter()
        .enumerate()
        .map(|(index, role)| {
            let (backend, posts) = (backend.clone(), posts.clone());
            tokio::spawn(task(
                backend,
                role,
                index as u64,
                posts,
                window,
                spec.batch_mode,
            ))
        })
        .collect();
    let mut total = TaskStats::new(true);
    for handle in handles {
        let stats = handle
            .await
            .map_err(|error| format!("a benchmark task failed: {error}"))?;
        total.merge(stats);
    }
    backend
        .close()
        .await
        .map_err(|error| format!("cannot close: {error}"))?;
    crate::data::check_posts(&spec.db, total.posts_written)?;
    Ok(Measurement::from_stats(&total, window.start))
}

/// One task's loop.
async fn task<B: AsyncBackend>(
    backend: B,
    role: TaskRole,
    index: u64,
    posts: Arc<[NewPost]>,
    window: Window,
    mode: BatchMode,
) -> TaskStats {
    let mut rng = XorShift::new(index);
    let mut stats = TaskStats::new(role.is_measured());
    loop {
        let op = role.next_op(&mut rng, &posts);
        let started = Instant::now();
        if started >= window.end {
            return stats;
        }
        let writes = op.posts_written();
        let result = perform_async(&backend, op, mode).await;
        if result.is_ok() {
            stats.posts_written += writes;
        }
        stats.record(started, Instant::now(), started >= window.start, result);
    }
}
