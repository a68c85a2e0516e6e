//! With the `metrics` feature, a recorder installed before the database opens sees the same
//! counts as `Status::counters`, under OpenTelemetry-style names and labels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use litemux::{Database, Role};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::TempDb;

/// Values recorded into one histogram.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// A metric's name and its labels, sorted.
type Id = (String, Vec<(String, String)>);

fn id(key: &Key) -> Id {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

/// Keeps every handle it gives out, so a test can read what was recorded.
#[derive(Default)]
struct Keep {
    counters: Mutex<HashMap<Id, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Id, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Id, Arc<Samples>>>,
}

impl Recorder for Keep {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(id(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(id(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(id(key)).or_default()))
    }
}

/// The process's recorder: installed once, shared by the tests, which tell their metrics
/// apart by their database's `db.namespace`.
fn recorder() -> &'static Keep {
    static KEEP: OnceLock<&'static Keep> = OnceLock::new();
    KEEP.get_or_init(|| {
        let keep: &'static Keep = Box::leak(Box::default());
        metrics::set_global_recorder(keep).expect("no other recorder");
        keep
    })
}

fn labels(namespace: &str, role: Option<Role>) -> Vec<(String, String)> {
    let mut labels = vec![
        ("db.namespace".to_owned(), namespace.to_owned()),
        ("db.system.name".to_owned(), "sqlite".to_owned()),
    ];
    if let Some(role) = role {
        labels.push(("litemux.role".to_owned(), role.as_str().to_owned()));
    }
    labels.sort();
    labels
}

impl Keep {
    fn counter(&self, name: &str, namespace: &str, role: Option<Role>) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters
            .get(&(name.to_owned(), labels(namespace, role)))
            .unwrap_or_else(|| panic!("no counter {name} {role:?}"))
            .load(Ordering::Relaxed)
    }

    fn samples(&self, name: &str, namespace: &str, role: Option<Role>) -> Vec<f64> {
        let histograms = self.histograms.lock().unwrap();
        let samples = histograms
            .get(&(name.to_owned(), labels(namespace, role)))
            .unwrap_or_else(|| panic!("no histogram {name} {role:?}"));
        samples.0.lock().unwrap().clone()
    }

    fn gauge(&self, name: &str, namespace: &str) -> f64 {
        let gauges = self.gauges.lock().unwrap();
        let bits = gauges
            .get(&(name.to_owned(), labels(namespace, None)))
            .unwrap_or_else(|| panic!("no gauge {name}"))
            .load(Ordering::Relaxed);
        f64::from_bits(bits)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_sees_what_status_counts() {
    let keep = recorder();
    let t = TempDb::new();
    let namespace = t.path.display().to_string();
    let db = Database::open_with(
        t.options()
            .readers(1)
            .health_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    for i in 0..5 {
        db.execute("INSERT INTO t(x) VALUES (?)", (i,))
            .await
            .unwrap();
    }
    for _ in 0..4 {
        db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    }
    db.execute("INSERT INTO nowhere VALUES (1)", ())
        .await
        .unwrap_err();
    let tx = db.begin().await.unwrap();
    for i in 0..20 {
        tx.execute("INSERT INTO t(x) VALUES (?)", (i,))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert!(db.run_health_check().await.unwrap().checkpointed);
    let c = db.status().counters;
    assert!(
        c.reader_statements >= 4 && c.writer_statements >= 7,
        "{c:#?}"
    );
    let reader = Some(Role::Reader);
    let writer = Some(Role::Writer);
    let counted = |name, role| keep.counter(name, &namespace, role);
    assert_eq!(counted("litemux.statements", reader), c.reader_statements);
    assert_eq!(counted("litemux.statements", writer), c.writer_statements);
    assert_eq!(
        counted("litemux.statements.failed", None),
        c.failed_statements
    );
    assert_eq!(c.failed_statements, 1);
    assert_eq!(counted("litemux.inline.runs", None), c.inline_runs);
    assert_eq!(counted("litemux.inline.proven", None), c.proven_runs);
    assert_eq!(
        c.proven_runs, 20,
        "the inserts inside the transaction: {c:#?}"
    );
    assert_eq!(counted("litemux.connection.waits", writer), c.writer_waits);
    assert_eq!(counted("litemux.checkpoints", None), 1);
    assert_eq!(
        counted("litemux.checkpoint.pages", None),
        c.checkpointed_pages
    );
    assert_eq!(
        keep.gauge("litemux.wal.pages", &namespace),
        c.wal_pages as f64
    );
    let durations = keep.samples("db.client.operation.duration", &namespace, reader);
    assert_eq!(durations.len() as u64, c.reader_statements);
    assert!(
        durations.iter().all(|s| (0.0..10.0).contains(s)),
        "seconds: {durations:?}"
    );
    let waits = keep.samples("db.client.connection.wait_time", &namespace, writer);
    assert_eq!(waits.len() as u64, c.writer_waits);
    let total: f64 = waits.iter().sum();
    let expected = c.writer_wait_time.as_secs_f64();
    assert!((total - expected).abs() < 1e-6, "{total} vs {expected}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_sizes_are_a_histogram() {
    let keep = recorder();
    let t = TempDb::new();
    let namespace = t.path.display().to_string();
    let db = Database::open_with(t.options().readers(1).inline_budget(Duration::ZERO))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    let insert = "INSERT INTO t(x) VALUES (?)";
    db.execute(insert, (0,)).await.unwrap();
    // Hold the writer's thread until four writes are queued behind it: they commit as one.
    let (release, blocker) = crate::hold_writer(&db).await;
    let writes: Vec<_> = (1..=4)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move { db.execute(insert, (i,)).await })
        })
        .collect();
    crate::until("four writes queued", || db.status().writer_queued >= 5).await;
    release.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let c = db.status().counters;
    assert_eq!((c.group_commits, c.grouped_statements), (1, 4));
    assert_eq!(keep.counter("litemux.group_commits", &namespace, None), 1);
    assert_eq!(
        keep.samples("litemux.group_commit.size", &namespace, None),
        [4.0]
    );
    db.close().await.unwrap();
}
