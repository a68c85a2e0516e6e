//! [`RefusedStatement`]: statements a [`ClusterConnection`](super::ClusterConnection) does not
//! run, because what they leave behind would stay with a pooled connection that other
//! connections use next.

use diesel::result::Error as DieselError;

use super::statements::{Statement, statements};

/// A statement a [`ClusterConnection`](super::ClusterConnection) refused before running
/// anything of the query or script it is in.
///
/// Outside a transaction each statement of a `ClusterConnection` runs on whichever pooled
/// connection of its node is free, and that connection serves other `ClusterConnection`s next;
/// a transaction's connection goes back to its pool when it ends. State a statement leaves on
/// its connection would reach them, not this connection's next statement. It arrives as
/// diesel's [`QueryBuilderError`](diesel::result::Error::QueryBuilderError), holding this:
///
/// ```no_run
/// # async fn demo(mut conn: litemux_diesel::replicated::ClusterConnection) {
/// use diesel_async::SimpleAsyncConnection;
/// use litemux_diesel::replicated::RefusedStatement;
/// let error = conn.batch_execute("BEGIN").await.unwrap_err();
/// let diesel::result::Error::QueryBuilderError(cause) = &error else { panic!() };
/// assert!(matches!(
///     cause.downcast_ref::<RefusedStatement>(),
///     Some(RefusedStatement::Transaction { .. })
/// ));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusedStatement {
    /// `BEGIN` or `START TRANSACTION` outside a transaction: the pooled connection it ran on
    /// would go back to its pool inside the transaction, where other connections' writes
    /// would join it and never commit. Use
    /// [`transaction`](super::ClusterConnection::transaction) (or
    /// [`read_transaction`](super::ClusterConnection::read_transaction)).
    #[error(
        "`{statement}`: a ClusterConnection runs each statement outside a transaction on any \
         pooled connection, which would go back to its pool inside this transaction; use \
         ClusterConnection::transaction"
    )]
    Transaction {
        /// The statement refused.
        statement: String,
    },
}

/// Whether `sql` may run: `Err` (diesel's error holding a [`RefusedStatement`]) if one of its
/// statements is refused.
pub(super) fn admit(sql: &str, in_transaction: bool) -> Result<(), DieselError> {
    for statement in statements(sql) {
        if let Some(refused) = refusal(&statement, in_transaction) {
            return Err(DieselError::QueryBuilderError(Box::new(refused)));
        }
    }
    Ok(())
}

fn refusal(statement: &Statement<'_>, in_transaction: bool) -> Option<RefusedStatement> {
    let word = |n: usize| statement.words.get(n).map_or("", String::as_str);
    let text = || {
        let mut text: String = statement.text.chars().take(80).collect();
        if text.len() < statement.text.len() {
            text.push_str("...");
        }
        text
    };
    // Inside one, BEGIN is a no-op and the transaction's end is diesel's COMMIT or ROLLBACK.
    let opens = matches!((word(0), word(1)), ("BEGIN", _) | ("START", "TRANSACTION"));
    (opens && !in_transaction).then(|| RefusedStatement::Transaction { statement: text() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str, in_transaction: bool) -> Option<RefusedStatement> {
        statements(sql)
            .iter()
            .find_map(|s| refusal(s, in_transaction))
    }

    #[test]
    fn opening_a_transaction_outside_one_is_refused() {
        for sql in [
            "BEGIN",
            "begin isolation level serializable",
            "START TRANSACTION",
            "INSERT INTO t VALUES (1); BEGIN; INSERT INTO t VALUES (2); COMMIT",
        ] {
            assert!(
                matches!(
                    refused(sql, false),
                    Some(RefusedStatement::Transaction { .. })
                ),
                "{sql}"
            );
            assert_eq!(refused(sql, true), None, "{sql}");
        }
        for sql in [
            "COMMIT",
            "ROLLBACK",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT 'BEGIN'",
        ] {
            assert_eq!(refused(sql, false), None, "{sql}");
        }
    }
}
