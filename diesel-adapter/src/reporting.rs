//! A connection's diesel instrumentation, shared with the statements it has in flight, so
//! that each `StartQuery` gets its `FinishQuery` even when the future running the statement
//! is dropped first (diesel's own connections never leave one unpaired: an instrumentation
//! that opens a span or starts a timer on `StartQuery` would otherwise keep it forever).

use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::result::{DatabaseErrorKind, Error};

use crate::query::QueryText;

type Shared = Arc<Mutex<Box<dyn Instrumentation>>>;

/// A connection's instrumentation, if any, shareable with its [`Reporting`]s.
#[derive(Default, Clone)]
pub(crate) struct SharedInstrumentation(Option<Shared>);

impl SharedInstrumentation {
    pub(crate) fn new(instrumentation: Option<Box<dyn Instrumentation>>) -> Self {
        SharedInstrumentation(instrumentation.map(|i| Arc::new(Mutex::new(i))))
    }

    pub(crate) fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Reports `StartQuery` for the statement `sql`, as given (if someone listens), and returns
    /// what reports its end.
    pub(crate) fn start_statement(&self, sql: &str) -> Reporting {
        self.start(self.is_some().then(|| QueryText(sql.to_owned())))
    }

    /// Reports `StartQuery` for `text` (if someone listens) and returns what reports its end.
    pub(crate) fn start(&self, text: Option<QueryText>) -> Reporting {
        let to = self.0.as_ref().zip(text).map(|(instrumentation, text)| {
            emit(instrumentation, InstrumentationEvent::start_query(&text));
            (Arc::clone(instrumentation), text)
        });
        Reporting { to }
    }
}

impl Instrumentation for SharedInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let Some(instrumentation) = &self.0 {
            emit(instrumentation, event);
        }
    }
}

fn emit(instrumentation: &Mutex<Box<dyn Instrumentation>>, event: InstrumentationEvent<'_>) {
    instrumentation
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .on_connection_event(event);
}

/// A statement whose `StartQuery` was reported: [`finish`](Self::finish) reports its end; if
/// dropped unfinished (its future was dropped), its end is reported then, with an error
/// saying its outcome is unknown.
#[must_use = "a reported start needs its finish"]
pub(crate) struct Reporting {
    to: Option<(Shared, QueryText)>,
}

impl Reporting {
    /// Reports the end as `sql` rather than as the start's text: `AsyncPgConnection`'s
    /// `FinishQuery` shows the SQL without its binds.
    #[cfg(feature = "postgres")]
    pub(crate) fn finishing_as(mut self, sql: &str) -> Self {
        if let Some((_, text)) = &mut self.to {
            *text = QueryText(sql.to_owned());
        }
        self
    }

    pub(crate) fn finish(mut self, error: Option<&Error>) {
        if let Some((instrumentation, text)) = self.to.take() {
            emit(
                &instrumentation,
                InstrumentationEvent::finish_query(&text, error),
            );
        }
    }
}

impl Drop for Reporting {
    fn drop(&mut self) {
        if let Some((instrumentation, text)) = self.to.take() {
            let abandoned = Error::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(
                    "the caller stopped waiting (its future was dropped): the statement's \
                     outcome is unknown"
                        .to_owned(),
                ),
            );
            emit(
                &instrumentation,
                InstrumentationEvent::finish_query(&text, Some(&abandoned)),
            );
        }
    }
}
