//! Dispatch: whether one statement outside a transaction goes to a reader or the writer.

use super::Router;
use super::read::Read;
use super::request::{Execute, Fetch, FetchAs, Request};
use crate::conn::Connection;
use crate::conn::converted::Converted;
use crate::conn::run::{ExecuteResult, Limit};
use crate::row::FromRow;
use crate::{Error, Result, Role, Row, Value};

impl Router<'_> {
    /// Runs a query where it belongs: on a reader when SQLite says it only reads, otherwise
    /// on the writer. Unknown SQL is classified by the reader that would run it.
    pub(crate) async fn fetch(
        &self,
        sql: &str,
        params: Vec<Value>,
        limit: Limit,
    ) -> Result<Vec<Row>> {
        self.route_request(sql, params, Fetch(limit), true).await
    }

    /// Runs a query and converts its rows where they are stepped; routed as [`fetch`](Self::fetch).
    pub(crate) async fn fetch_as<T: FromRow>(
        &self,
        sql: &str,
        params: Vec<Value>,
        limit: Limit,
    ) -> Result<Vec<T>> {
        self.route_request(sql, params, FetchAs::new(limit), true)
            .await
            .map(Converted::into_rows)
    }

    /// Runs a statement for its effect; writes (and anything unknown) go to the writer.
    pub(crate) async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<ExecuteResult> {
        self.route_request(sql, params, Execute, false).await
    }

    /// Sends `request` to a reader if it is known to only read the file (or, when
    /// `unknown_reads`, not known at all and readers can tell), else to the writer.
    async fn route_request<R: Request>(
        &self,
        sql: &str,
        params: Vec<Value>,
        request: R,
        unknown_reads: bool,
    ) -> Result<R::Output> {
        let known = self.context.classified.get(sql);
        let to_reader = match known {
            Some(known) => known.reads_the_file(),
            None => unknown_reads && self.readers_can_classify(),
        };
        let params = match self.readers {
            Some(readers) if to_reader => {
                match self.read(readers, sql, params, request, known).await? {
                    Read::Done(outcome) => return outcome,
                    Read::ForWriter(params) => params,
                }
            }
            _ => params,
        };
        self.write(sql, params, request).await
    }

    /// Where `sql` would run outside a transaction.
    pub(crate) async fn route(&self, sql: &str) -> Result<Role> {
        let on_reader = match self.context.classified.get(sql) {
            Some(known) => known.reads_the_file(),
            None => {
                let sql = sql.to_owned();
                let classify = move |conn: &mut Connection| match conn.classify(&sql) {
                    Ok(c) => Ok(c.reads_the_file()),
                    // A reader may not even prepare it: a PRAGMA that sets a value.
                    Err(Error::ReadOnly { .. }) if conn.role() == Role::Reader => Ok(false),
                    Err(e) => Err(e),
                };
                match self.readers {
                    Some(readers) if self.readers_can_classify() => {
                        readers.get().await?.call(classify).await??
                    }
                    _ => self.writer.worker.call(classify).await??,
                }
            }
        };
        Ok(if on_reader && self.readers.is_some() {
            Role::Reader
        } else {
            Role::Writer
        })
    }
}
