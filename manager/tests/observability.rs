//! Statement and transaction spans nest under the caller's span wherever the statement runs
//! (inline, on a reader's or the writer's thread, in a group commit), with OpenTelemetry's
//! database fields; slow statements are logged at WARN; `Status` counts what ran.
//!
//! Each test installs its capturing subscriber for its own thread only and runs on a
//! current-thread runtime, so every future here is polled on that thread. Connection threads
//! do not share that default subscriber: litemux must carry the caller's to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litemux::{Database, Options, Role};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::TempDb;

/// One span or event, as the subscriber saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Order of creation, unique (span ids are reused once a span closes).
    seq: usize,
    name: String,
    target: String,
    level: String,
    /// `seq` of the parent span, if any.
    parent: Option<usize>,
    fields: HashMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Log {
    spans: Vec<Seen>,
    events: Vec<Seen>,
}

/// A layer that keeps every span (with its fields, also those recorded later) and event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Log>>);

/// The `seq` a span was given, kept in its extensions.
struct Seq(usize);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .and_then(|parent| parent.extensions().get::<Seq>().map(|s| s.0));
        let mut log = self.0.lock().unwrap();
        let seq = log.spans.len();
        let mut seen = Seen {
            seq,
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            level: attrs.metadata().level().to_string(),
            parent,
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut seen.fields));
        log.spans.push(seen);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Seq(seq));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(seq) = ctx
            .span(id)
            .and_then(|span| span.extensions().get::<Seq>().map(|s| s.0))
        else {
            return;
        };
        let mut log = self.0.lock().unwrap();
        values.record(&mut Fields(&mut log.spans[seq].fields));
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let parent = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<Seq>().map(|s| s.0));
        let mut seen = Seen {
            name: event.metadata().name().to_owned(),
            target: event.metadata().target().to_owned(),
            level: event.metadata().level().to_string(),
            parent,
            ..Seen::default()
        };
        event.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().events.push(seen);
    }
}

impl Capture {
    /// Installs itself for this thread until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        // While only one subscriber is alive, `tracing` judges a callsite's interest by the
        // default of whichever thread reaches it first: another test's thread, with no
        // subscriber, would switch this test's spans off. A second subscriber that lives as
        // long as the process makes it ask every live one.
        static ANOTHER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        ANOTHER.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
        let guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()));
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn spans(&self) -> Vec<Seen> {
        self.0.lock().unwrap().spans.clone()
    }

    fn events(&self) -> Vec<Seen> {
        self.0.lock().unwrap().events.clone()
    }

    /// The statement spans of `sql`.
    fn statements(&self, sql: &str) -> Vec<Seen> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == "litemux.statement" && s.field("db.query.text") == Some(sql))
            .collect()
    }

    /// The one statement span of `sql`.
    fn statement(&self, sql: &str) -> Seen {
        let found = self.statements(sql);
        assert_eq!(
            found.len(),
            1,
            "one span for {sql}: {found:#?} among {:#?}",
            self.spans()
                .iter()
                .map(|s| (
                    s.name.clone(),
                    s.field("db.query.text").map(str::to_owned),
                    s.parent
                ))
                .collect::<Vec<_>>()
        );
        found.into_iter().next().unwrap()
    }

    /// The `seq` of the span named `name` (a test's own span, created once).
    fn seq_of(&self, name: &str) -> usize {
        self.spans()
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.seq)
            .unwrap_or_else(|| panic!("no span {name}"))
    }
}

/// A budget no statement here overruns, so a read that may run inline does, on any load.
const ALWAYS_INLINE: Duration = Duration::from_secs(30);

async fn open(t: &TempDb, options: impl FnOnce(Options) -> Options) -> Database {
    let options = options(
        t.options()
            .readers(1)
            .health_interval(Duration::from_secs(3600)),
    );
    let db = Database::open_with(options).await.expect("open");
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .expect("schema");
    db
}

#[tokio::test]
async fn an_inline_read_is_a_span_under_the_callers_span_with_otel_fields() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(ALWAYS_INLINE)).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let sql = "SELECT x FROM t WHERE x > ?";
    db.fetch_all(sql, (0,))
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    let span = capture.statement(sql);
    assert_eq!(span.parent, Some(capture.seq_of("request")));
    assert_eq!(span.target, "litemux::statement");
    assert_eq!(span.level, "DEBUG");
    let namespace = t.path.display().to_string();
    for (field, value) in [
        ("db.system.name", "sqlite"),
        ("db.namespace", namespace.as_str()),
        ("db.operation.name", "SELECT"),
        ("otel.name", "SELECT"),
        ("db.response.returned_rows", "1"),
        ("litemux.role", "reader"),
        ("litemux.inline", "true"),
    ] {
        assert_eq!(span.field(field), Some(value), "{field} in {span:#?}");
    }
    assert_eq!(span.field("db.query.parameters"), None, "params are off");
    assert_eq!(span.field("error.type"), None);
    // The DEBUG event of the history is emitted inside the span.
    let event = capture
        .events()
        .into_iter()
        .find(|e| e.target == "litemux::statement" && e.field("sql") == Some(sql))
        .expect("the statement's event");
    assert_eq!(event.parent, Some(span.seq));
}

#[tokio::test]
async fn a_read_queued_on_a_reader_thread_keeps_the_callers_span_as_parent() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    // No inline runs: every statement goes through its connection's thread.
    let db = open(&t, |o| o.inline_budget(Duration::ZERO).record_params(true)).await;
    let sql = "SELECT x FROM t WHERE x = ?";
    db.fetch_optional(sql, (5,))
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    let span = capture.statement(sql);
    assert_eq!(span.parent, Some(capture.seq_of("request")), "{span:#?}");
    assert_eq!(span.field("litemux.role"), Some("reader"));
    assert_eq!(span.field("litemux.inline"), Some("false"));
    assert!(span.field("litemux.queue_wait_us").is_some());
    assert_eq!(span.field("db.query.parameters"), Some("[Integer(5)]"));
    assert_eq!(span.field("db.response.returned_rows"), Some("0"));
}

#[tokio::test]
async fn a_writer_statement_and_its_failure_are_spans_under_the_callers_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(Duration::ZERO)).await;
    let insert = "INSERT INTO t(id, x) VALUES (?, ?)";
    async {
        db.execute(insert, (1, 10)).await.unwrap();
        let duplicate = db.execute(insert, (1, 11)).await.unwrap_err();
        assert!(matches!(duplicate, litemux::Error::Constraint { .. }));
    }
    .instrument(tracing::info_span!("request"))
    .await;
    let request = capture.seq_of("request");
    let runs = capture.statements(insert);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for run in &runs {
        assert_eq!(run.parent, Some(request), "{run:#?}");
        assert_eq!(run.field("litemux.role"), Some("writer"));
        assert_eq!(run.field("litemux.inline"), Some("false"));
        assert_eq!(run.field("db.operation.name"), Some("INSERT"));
    }
    assert_eq!(runs[0].field("litemux.rows_affected"), Some("1"));
    assert_eq!(runs[0].field("error.type"), None);
    assert_eq!(runs[1].field("error.type"), Some("constraint"));
    // SQLITE_CONSTRAINT_PRIMARYKEY
    assert_eq!(runs[1].field("db.response.status_code"), Some("1555"));
}

#[tokio::test]
async fn each_member_of_a_group_commit_runs_in_its_own_callers_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(Duration::ZERO)).await;
    let insert = "INSERT INTO t(x) VALUES (?)";
    // Known as DML from now on, so later runs may join a group.
    db.execute(insert, (0,)).await.unwrap();
    // Hold the writer's thread until all three writes are queued behind it.
    let (release, blocker) = crate::hold_writer(&db).await;
    let writes: Vec<_> = (1..=3)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(
                async move { db.execute(insert, (i,)).await }
                    .instrument(tracing::info_span!("caller", n = i)),
            )
        })
        .collect();
    while db.status().writer_queued < 4 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let callers: Vec<usize> = capture
        .spans()
        .iter()
        .filter(|s| s.name == "caller")
        .map(|s| s.seq)
        .collect();
    let grouped: Vec<Seen> = capture
        .statements(insert)
        .into_iter()
        .filter(|s| s.field("litemux.group_size") == Some("3"))
        .collect();
    assert_eq!(grouped.len(), 3, "{grouped:#?}");
    let mut parents: Vec<usize> = grouped.iter().filter_map(|s| s.parent).collect();
    parents.sort_unstable();
    assert_eq!(parents, callers, "each member under its own caller");
    // The group's BEGIN and COMMIT are traced under the first member's caller.
    let begin = capture.statement("BEGIN IMMEDIATE");
    let commit = capture.statement("COMMIT");
    assert!(begin.parent.is_some_and(|p| callers.contains(&p)));
    assert_eq!(begin.parent, commit.parent);
    let counters = db.status().counters;
    assert_eq!(
        (
            counters.group_commits,
            counters.grouped_statements,
            counters.largest_group
        ),
        (1, 3, 3)
    );
}

#[tokio::test]
async fn a_transaction_is_a_span_under_the_caller_and_its_statements_under_it() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o).await;
    let insert = "INSERT INTO t(x) VALUES (?)";
    let read = "SELECT count(*) FROM t";
    async {
        db.transaction(async |tx| {
            tx.execute(insert, (1,)).await?;
            tx.fetch_one(read, ()).await
        })
        .await
        .unwrap();
        // A handle from `begin`: statements sent from the span it began in go under it too.
        let tx = db.begin().await.unwrap();
        tx.execute(insert, (2,)).await.unwrap();
        tx.rollback().await.unwrap();
    }
    .instrument(tracing::info_span!("request"))
    .await;
    let request = capture.seq_of("request");
    let transactions: Vec<Seen> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name == "litemux.transaction")
        .collect();
    assert_eq!(transactions.len(), 2, "{transactions:#?}");
    for (tx, outcome) in transactions.iter().zip(["commit", "rollback"]) {
        assert_eq!(tx.parent, Some(request));
        assert_eq!(tx.field("litemux.outcome"), Some(outcome));
        assert_eq!(tx.field("db.system.name"), Some("sqlite"));
    }
    let under = |sql: &str| -> Vec<Option<usize>> {
        capture.statements(sql).iter().map(|s| s.parent).collect()
    };
    let (first, second) = (Some(transactions[0].seq), Some(transactions[1].seq));
    assert_eq!(under("BEGIN IMMEDIATE"), [first, second]);
    assert_eq!(under(insert), [first, second]);
    assert_eq!(under(read), [first]);
    assert_eq!(under("COMMIT"), [first]);
    assert_eq!(under("ROLLBACK"), [second]);
}

#[tokio::test]
async fn a_transaction_dropped_uncommitted_says_so_and_rolls_back_in_its_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(Duration::ZERO)).await;
    async {
        let tx = db.begin().await.unwrap();
        tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
        drop(tx);
        // The rollback is queued on the writer's thread: this job runs after it.
        db.with_writer(|_| ()).await.unwrap();
        assert_eq!(crate::count(&db).await, 0);
    }
    .instrument(tracing::info_span!("request"))
    .await;
    let tx = capture
        .spans()
        .into_iter()
        .find(|s| s.name == "litemux.transaction")
        .unwrap();
    assert_eq!(tx.field("litemux.outcome"), Some("dropped"));
    assert_eq!(capture.statement("ROLLBACK").parent, Some(tx.seq));
}

/// A statement that takes well over a millisecond on any machine.
const SLOW: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) \
                    SELECT count(*) FROM n";

#[tokio::test]
async fn a_statement_over_the_slow_threshold_is_a_warning_in_its_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| {
        o.slow_statement_threshold(Duration::from_millis(1))
            .inline_budget(Duration::ZERO)
    })
    .await;
    let before = db.status().counters.slow_statements;
    db.fetch_one(SLOW, ())
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    let span = capture.statement(SLOW);
    let warnings: Vec<Seen> = capture
        .events()
        .into_iter()
        .filter(|e| e.target == "litemux::slow" && e.field("db.query.text") == Some(SLOW))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = &warnings[0];
    assert_eq!(warning.level, "WARN");
    assert_eq!(warning.parent, Some(span.seq));
    assert_eq!(warning.field("db.query.text"), Some(SLOW));
    assert_eq!(warning.field("threshold_us"), Some("1000"));
    assert!(
        warning
            .field("duration_us")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1000
    );
    assert_eq!(db.status().counters.slow_statements, before + 1);
}

#[tokio::test]
async fn the_slow_threshold_comes_from_the_url_and_is_off_by_default() {
    for (query, slow) in [("?slow_statement_threshold=1", 1), ("", 0)] {
        let capture = Capture::default();
        let _guard = capture.install();
        let t = TempDb::new();
        let db = Database::open(&t.url(query)).await.unwrap();
        db.fetch_one(SLOW, ()).await.unwrap();
        let warned = capture
            .events()
            .iter()
            .filter(|e| e.target == "litemux::slow")
            .count();
        assert_eq!(warned, slow, "{query}");
        assert_eq!(db.status().counters.slow_statements, slow as u64, "{query}");
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn status_counts_a_known_workload_exactly() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(ALWAYS_INLINE).group_commit(false)).await;
    // Open: the schema script, one writer statement, queued (no SQL is inline before it is
    // known).
    let start = db.status().counters;
    assert_eq!(
        (
            start.writer_statements,
            start.reader_statements,
            start.inline_runs
        ),
        (1, 0, 0)
    );
    let insert = "INSERT INTO t(x) VALUES (?)";
    for i in 0..3 {
        db.execute(insert, (i,)).await.unwrap();
    }
    for _ in 0..2 {
        db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    }
    db.fetch_all("SELECT nope FROM t", ()).await.unwrap_err();
    db.transaction(async |tx| tx.execute(insert, (9,)).await)
        .await
        .unwrap();
    let c = db.status().counters;
    // Writer: schema, 3 inserts, BEGIN + insert + COMMIT. Reader: 2 selects, 1 that failed
    // to prepare.
    assert_eq!(c.writer_statements, 1 + 3 + 3, "{c:#?}");
    assert_eq!(c.reader_statements, 2 + 1, "{c:#?}");
    assert_eq!(c.failed_statements, 1, "{c:#?}");
    // Both SELECTs run inline on the idle reader; an INSERT runs inline when the writer's
    // thread has counted the one before finished, which it does just after answering: the
    // spans tell which did.
    let inline = capture
        .spans()
        .iter()
        .filter(|s| s.field("litemux.inline") == Some("true"))
        // It failed to prepare: it never ran.
        .filter(|s| s.field("db.query.text") != Some("SELECT nope FROM t"))
        .count() as u64;
    // The transaction's insert is proven short: it runs inline too, with no budget.
    assert_eq!(c.proven_runs, 1, "{c:#?}");
    assert_eq!(c.inline_runs + c.proven_runs, inline, "{c:#?}");
    assert!(c.inline_runs >= 2, "{c:#?}");
    assert_eq!(c.inline_overruns, 0);
    assert_eq!((c.group_commits, c.busy_errors, c.interrupts), (0, 0, 0));
    // Every write and the transaction waited for the writer's lease (the schema too).
    assert_eq!(c.writer_waits, 1 + 3 + 1, "{c:#?}");
    assert!(c.writer_wait_time > Duration::ZERO);
    let report = db.run_health_check().await.unwrap();
    assert!(report.checkpointed);
    let c = db.status().counters;
    assert_eq!(c.checkpoints, 1);
    assert!(c.wal_pages > 0, "the writes left pages in the WAL: {c:#?}");
    // A reader's snapshot (the lock anchor's) may keep the last frames in the WAL.
    assert!(
        c.checkpointed_pages > 0 && c.checkpointed_pages <= c.wal_pages,
        "{c:#?}"
    );
    assert!(c.checkpoint_time > Duration::ZERO);
    // The checkpoint is a writer statement of its own.
    assert_eq!(c.writer_statements, 1 + 3 + 3 + 1);
    let role = crate::role_of(&db, "PRAGMA wal_checkpoint(PASSIVE)");
    assert_eq!(role, Some(Role::Writer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_interrupts_and_reader_waits() {
    let t = TempDb::new();
    let db = open(&t, |o| {
        o.statement_timeout(Duration::from_millis(20))
            .inline_budget(Duration::ZERO)
    })
    .await;
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n";
    let stopped = db.fetch_one(endless, ()).await.unwrap_err();
    assert!(matches!(stopped, litemux::Error::Interrupted { .. }));
    let c = db.status().counters;
    assert_eq!(c.interrupts, 1, "{c:#?}");
    assert_eq!(c.failed_statements, 1, "{c:#?}");
    // With inline runs off, the read checked a reader out of the pool.
    assert_eq!(c.reader_waits, 1, "{c:#?}");
}

/// Inside a read transaction a read routing knows runs inline on the transaction's own
/// reader, on the caller's thread. Its first run, unknown, goes through the reader's thread
/// and teaches routing the statement (a read transaction may be all a program reads in).
#[tokio::test]
async fn a_known_read_in_a_read_transaction_runs_inline_on_its_reader() {
    let capture = Capture::default();
    let _guard = capture.install();
    let t = TempDb::new();
    let db = open(&t, |o| o.inline_budget(ALWAYS_INLINE)).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let sql = "SELECT x FROM t WHERE x >= ?";
    let runs = || -> Vec<(Option<String>, Option<String>)> {
        capture
            .spans()
            .into_iter()
            .filter(|s| s.field("db.query.text") == Some(sql))
            .map(|s| {
                let field = |name| s.field(name).map(str::to_owned);
                (field("litemux.role"), field("litemux.inline"))
            })
            .collect()
    };
    let tx = db.begin_read().await.unwrap();
    assert_eq!(tx.fetch_all(sql, (0,)).await.unwrap().len(), 1);
    let queued = (Some("reader".to_owned()), Some("false".to_owned()));
    assert_eq!(runs(), [queued]);
    // An inline attempt right after a queued read may find the reader's thread not yet done
    // counting it (on a loaded machine, for a while): it then queues. Some run goes inline.
    let inline = (Some("reader".to_owned()), Some("true".to_owned()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !runs().contains(&inline) {
        assert!(
            std::time::Instant::now() < deadline,
            "never inline: {:?}",
            runs()
        );
        std::thread::yield_now();
        assert_eq!(tx.fetch_all(sql, (0,)).await.unwrap().len(), 1);
    }
    tx.end().await.unwrap();
}
