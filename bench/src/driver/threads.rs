//! Drives a blocking contestant: one OS thread and one connection per task.

use std::thread;
use std::time::Instant;

use crate::contestants::{SyncBackend, perform_sync};
use crate::data::NewPost;
use crate::driver::{RunSpec, Window};
use crate::rng::XorShift;
use crate::stats::{Measurement, TaskStats};
use crate::workload::{TaskRole, sample_posts};

/// Runs `spec` on backend `B`, and checks the file holds the posts it wrote.
pub fn run<B: SyncBackend>(spec: &RunSpec) -> Result<Measurement, String> {
    let (measurement, written) = run_unchecked::<B>(spec)?;
    crate::data::check_posts(&spec.db, written)?;
    Ok(measurement)
}

/// Runs `spec` on backend `B`; the measurement and the posts its operations wrote.
fn run_unchecked<B: SyncBackend>(spec: &RunSpec) -> Result<(Measurement, u64), String> {
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
    Ok((
        Measurement::from_stats(&total, window.start),
        total.posts_written,
    ))
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
        let writes = op.posts_written();
        let result = perform_sync::<B>(&mut conn, op);
        if result.is_ok() {
            stats.posts_written += writes;
        }
        stats.record(started, Instant::now(), started >= window.start, result);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::contestants::{BatchMode, OpResult};
    use crate::data::User;
    use crate::driver::Plan;
    use crate::workload::Workload;

    /// A contestant whose every batch takes [`OP`], exactly: its true throughput is 1/OP.
    struct FixedCost;

    const OP: Duration = Duration::from_millis(100);

    impl crate::contestants::SyncBackend for FixedCost {
        type Conn = ();
        fn connect(_: &Path) -> OpResult<()> {
            Ok(())
        }
        fn point_read(_: &mut (), id: i64) -> OpResult<User> {
            Ok(User {
                id,
                name: "n".into(),
                email: "e".into(),
            })
        }
        fn scan(_: &mut ()) -> OpResult<Vec<User>> {
            Ok(Vec::new())
        }
        fn insert(_: &mut (), _: &NewPost) -> OpResult {
            Ok(())
        }
        fn batch_insert(_: &mut (), _: &[NewPost]) -> OpResult {
            // The operation's own cost (the work being measured), not synchronisation.
            std::thread::sleep(OP);
            Ok(())
        }
        fn hold_write(_: &mut (), _: &NewPost, _: Duration) -> OpResult {
            Ok(())
        }
    }

    /// The window opens while a warm-up operation still runs: its remainder is not charged to
    /// the window, whose operations are counted from the first that started in it (charged,
    /// 100 ms operations in a 300 ms window after 150 ms of warm-up measured 8.6/s, not 10/s,
    /// and long operations of slow contestants were understated by up to one operation).
    #[test]
    fn a_warm_up_operation_straddling_the_window_is_not_charged_to_it() {
        let spec = RunSpec {
            workload: Workload::BatchInsert10k,
            db: std::env::temp_dir().join("unused.db"),
            plan: Plan {
                warmup: Duration::from_millis(150),
                measure: Duration::from_millis(300),
            },
            batch_mode: BatchMode::RowByRow,
            tasks: None,
        };
        // It writes nothing to a file: the run is not checked against one.
        let (m, _) = run_unchecked::<FixedCost>(&spec).expect("run");
        let true_rate = 1.0 / OP.as_secs_f64();
        let measured = m.ops_per_sec();
        assert!(
            (measured - true_rate).abs() / true_rate < 0.05,
            "measured {measured:.2} ops/s for a contestant doing exactly {true_rate:.2}/s \
             ({} ops over {:?})",
            m.ops,
            m.elapsed
        );
    }
}
