//! Every statement is also a `tracing` event, with the history's fields.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::TempDb;

/// One event's fields, as `(name, value)`.
type Event = Vec<(String, String)>;

/// Keeps the fields of every `litemux::statement` event.
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "litemux::statement" {
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_tracing_events() {
    let events = Arc::new(Mutex::new(Vec::new()));
    // Statements run on connection threads and runtime threads: the subscriber must be global.
    // No other test installs one.
    let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&events)));
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (?)", (1,))
        .await
        .unwrap();
    db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    let database = t.path.display().to_string();
    let ours: Vec<Event> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|fields| {
            fields
                .iter()
                .any(|(k, v)| k == "database" && *v == database)
        })
        .cloned()
        .collect();
    let field = |event: &Event, name: &str| {
        event
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let select = ours
        .iter()
        .find(|e| field(e, "sql").as_deref() == Some("SELECT x FROM t"))
        .expect("an event for the SELECT");
    assert_eq!(field(select, "role").as_deref(), Some("reader"));
    assert_eq!(field(select, "rows").as_deref(), Some("1"));
    assert!(field(select, "duration_us").is_some());
    let insert = ours
        .iter()
        .find(|e| field(e, "sql").as_deref() == Some("INSERT INTO t(x) VALUES (?)"))
        .expect("an event for the INSERT");
    assert_eq!(field(insert, "role").as_deref(), Some("writer"));
}
