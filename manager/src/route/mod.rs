//! Routing: where a statement outside a transaction runs — on a reader when SQLite says it
//! only reads the file, else on the writer — and whether it runs inline on the caller's
//! thread or on its connection's thread.
//!
//! - `dispatch.rs`: reader or writer, for one statement.
//! - `read.rs`: the read path (choosing a reader, inline or queued, handing writes over).
//! - `write.rs`: the write path (inline on the idle writer, queued, or in a group commit).
//! - `inline.rs`: the inline policy and its memory of overruns.
//! - `request.rs`: `fetch` and `execute` as one [`Request`](request::Request).

mod dispatch;
pub(crate) mod inline;
mod read;
pub(crate) mod request;
mod write;

use crate::Options;
use crate::conn::Context;
use crate::pool::readers::Readers;
use crate::pool::writer::Writer;
use crate::route::inline::InlinePolicy;

/// The routing of one database: a view of its connections and what routing knows.
#[derive(Clone, Copy)]
pub(crate) struct Router<'a> {
    pub(crate) options: &'a Options,
    pub(crate) context: &'a Context,
    pub(crate) writer: &'a Writer,
    /// `None` when there are no readers (in-memory, `readers=0`, force-rollback).
    pub(crate) readers: Option<&'a Readers>,
    pub(crate) inline: &'a InlinePolicy,
}

impl Router<'_> {
    /// Whether a reader can tell what an unknown statement does: not once the writer has
    /// temp objects or attachments, which change what names mean there.
    pub(crate) fn readers_can_classify(&self) -> bool {
        self.context.classified.epoch() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conn::budget::Attempt;
    use crate::conn::run::Limit;
    use crate::sql::{Classified, Kind};
    use crate::{Error, Result, Role};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_misjudged_as_a_read_is_refused_by_the_reader_and_retried_on_the_writer()
    -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        let shared = crate::db::open(Options::new(dir.path().join("m.db")).readers(1)).await?;
        let route = shared.route();
        route.execute_batch("CREATE TABLE t(x)").await?;
        let sql = "INSERT INTO t(x) VALUES (1) RETURNING x";
        // Plant the wrong answer SQLite would never give.
        let wrong = Classified {
            kind: Kind::Read,
            parameters: 0,
            has_tail: false,
            empty: false,
            dml: false,
            returns_rows: true,
            session: false,
            epoch: 0,
        };
        route.context.classified.insert(sql, wrong);
        let rows = route.fetch(sql, Vec::new(), Limit::All).await?;
        assert_eq!(rows.len(), 1);
        let runs: Vec<(Role, bool)> = route
            .context
            .history
            .snapshot()
            .into_iter()
            .filter(|e| e.sql == sql)
            .map(|e| (e.role, e.error.is_some()))
            .collect();
        assert_eq!(runs, [(Role::Reader, true), (Role::Writer, false)]);
        assert_eq!(
            route.context.classified.get(sql).map(|c| c.kind),
            Some(Kind::Write)
        );
        let n = route
            .fetch("SELECT count(*) FROM t", Vec::new(), Limit::First)
            .await?;
        assert_eq!(n[0].get::<i64>(0)?, 1, "written once, by the writer");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_read_that_finishes_clears_earlier_overruns() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        // A budget nothing here can overrun, so the run below finishes inline.
        let options = Options::new(dir.path().join("m.db"))
            .readers(1)
            .inline_budget(Duration::from_secs(10));
        let shared = crate::db::open(options).await?;
        let route = shared.route();
        route.execute_batch("CREATE TABLE t(x)").await?;
        let sql = "SELECT count(*) FROM t";
        for _ in 0..inline::OVERRUNS_BEFORE_QUEUED - 1 {
            let budget = route.inline.budget(sql).expect("inline");
            route.inline.learn::<()>(sql, budget, &Attempt::Overran);
        }
        route.fetch(sql, Vec::new(), Limit::First).await?;
        for _ in 0..inline::OVERRUNS_BEFORE_QUEUED - 1 {
            let budget = route.inline.budget(sql).expect("inline");
            route.inline.learn::<()>(sql, budget, &Attempt::Overran);
        }
        assert!(
            route.inline.budget(sql).is_some(),
            "only overruns in a row count: the inline run in between cleared them"
        );
        Ok(())
    }
}
