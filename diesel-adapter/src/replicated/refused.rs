//! [`RefusedStatement`]: statements a [`ClusterConnection`](super::ClusterConnection) does not
//! run, because what they leave behind would stay with a pooled connection that other
//! connections use next.

use diesel::result::Error as DieselError;

use super::statements::{Statement, dollar_tag, name, statements};

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
    /// A statement that changes the session (in or out of a transaction: a transaction's
    /// connection serves others once it ends): `SET` (not `SET LOCAL`), `RESET`, `LISTEN`,
    /// `UNLISTEN`, `DISCARD`, `PREPARE`, `DEALLOCATE`, `LOAD`, `CREATE TEMP ...` (unless `ON
    /// COMMIT DROP`) or anything created in the schema `pg_temp`, `SELECT ... INTO TEMP`
    /// (or `INTO pg_temp.t`), `DECLARE ... WITH HOLD`, a session advisory lock
    /// (`pg_advisory_lock`, `pg_try_advisory_lock` and their `_shared` forms, quoted or not)
    /// and `set_config` unless its `is_local` is a literal `true` (`false`, a bound value, a
    /// string or an expression may keep the setting), and a `DO` block whose body has one of
    /// these. Instead: `SET LOCAL` or `set_config(.., .., true)` inside
    /// a [`transaction`](super::ClusterConnection::transaction), `pg_advisory_xact_lock` inside
    /// one, or settings every connection gets from the URL
    /// (`?options=-c%20search_path%3Dapp`).
    #[error(
        "`{statement}` changes the session, which would stay with a pooled connection that \
         other connections use next (a ClusterConnection runs each statement outside a \
         transaction on any pooled connection); use SET LOCAL, set_config(.., .., true) or \
         pg_advisory_xact_lock inside ClusterConnection::transaction, or settings in the \
         connection URL's `options`"
    )]
    SessionState {
        /// The statement refused.
        statement: String,
    },
}

/// Whether `sql` may run: `Err` (diesel's error holding a [`RefusedStatement`]) if one of its
/// statements is refused.
pub(super) fn admit(statements: &[Statement<'_>], in_transaction: bool) -> Result<(), DieselError> {
    for statement in statements {
        if let Some(refused) = refusal(statement, in_transaction) {
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
    if opens && !in_transaction {
        return Some(RefusedStatement::Transaction { statement: text() });
    }
    let changes = changes_session(&statement.words)
        || (word(0) == "DO" && do_body(statement.text).is_some_and(|b| body_changes_session(&b)));
    changes.then(|| RefusedStatement::SessionState { statement: text() })
}

/// The body of a `DO` block, which runs now (a function's body runs only when called): its
/// first dollar-quoted or single-quoted string.
fn do_body(text: &str) -> Option<String> {
    let at = text.find(['$', '\''])?;
    let rest = &text[at..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        let mut body = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    body.push('\'');
                }
                '\'' => break,
                c => body.push(c),
            }
        }
        return Some(body);
    }
    let tag = dollar_tag(rest)?;
    let body = &rest[tag.len()..];
    Some(body[..body.find(tag).unwrap_or(body.len())].to_owned())
}

/// Whether a PL/pgSQL block body changes the session: one of its statements would, also after
/// the words that open a block or branch (`BEGIN SET ...`, `IF .. THEN SET ...`).
fn body_changes_session(body: &str) -> bool {
    statements(body).iter().any(|statement| {
        let words = &statement.words;
        (0..words.len()).any(|k| {
            let starts =
                k == 0 || matches!(words[k - 1].as_str(), "BEGIN" | "THEN" | "ELSE" | "LOOP");
            starts && changes_session(&words[k..])
        })
    })
}

/// Whether a statement leaves state on its session past its transaction; see
/// [`RefusedStatement::SessionState`].
fn changes_session(words: &[String]) -> bool {
    let word = |n: usize| words.get(n).map_or("", String::as_str);
    let pair = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    let temporary = |w: &String| matches!(w.as_str(), "TEMP" | "TEMPORARY");
    let statement = match word(0) {
        // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS last until the transaction ends.
        "SET" => !matches!(word(1), "LOCAL" | "TRANSACTION" | "CONSTRAINTS"),
        "RESET" | "LISTEN" | "UNLISTEN" | "DISCARD" | "DEALLOCATE" | "LOAD" => true,
        "PREPARE" => word(1) != "TRANSACTION",
        // CREATE [OR REPLACE] [LOCAL | GLOBAL] TEMP[ORARY] [RECURSIVE] TABLE | VIEW | SEQUENCE:
        // only those words come before the kind (`CREATE INDEX ... (temp)` names a column).
        "CREATE" => {
            let modifier = |w: &&String| {
                matches!(
                    w.as_str(),
                    "OR" | "REPLACE"
                        | "LOCAL"
                        | "GLOBAL"
                        | "TEMP"
                        | "TEMPORARY"
                        | "RECURSIVE"
                        | "UNLOGGED"
                )
            };
            let modifiers = words.iter().skip(1).take_while(modifier).count();
            matches!(word(1 + modifiers), "TABLE" | "VIEW" | "SEQUENCE")
                && words.iter().skip(1).take(modifiers).any(temporary)
                && !pair("COMMIT", "DROP")
        }
        "DECLARE" => pair("WITH", "HOLD"),
        _ => false,
    };
    // SELECT ... INTO TEMP t or INTO pg_temp.t (not INSERT INTO temp, a table of that name).
    let into_temporary = matches!(word(0), "SELECT" | "WITH")
        && !words.iter().any(|w| w == "INSERT")
        && words
            .windows(2)
            .any(|w| w[0] == "INTO" && (temporary(&w[1]) || temporary_schema(&w[1])));
    // CREATE ... pg_temp.x: a temporary table, view, sequence or function, as CREATE TEMP
    // makes (a view of a temporary table is one too).
    let in_temporary_schema =
        word(0) == "CREATE" && words.iter().any(|w| temporary_schema(w)) && !pair("COMMIT", "DROP");
    // Session advisory locks; the `_XACT_` ones end with their transaction.
    let session_lock = words.iter().any(|w| {
        matches!(
            name(w),
            "PG_ADVISORY_LOCK"
                | "PG_ADVISORY_LOCK_SHARED"
                | "PG_TRY_ADVISORY_LOCK"
                | "PG_TRY_ADVISORY_LOCK_SHARED"
        )
    });
    // set_config(name, value, is_local): string and parameter arguments leave no words, so
    // the word after it is `is_local` if that is a literal. Only a literal `true` is known to
    // end with the transaction; `false`, a bound value (diesel's typed call binds them all),
    // a string or an expression may not.
    let session_config = words
        .iter()
        .enumerate()
        .any(|(n, w)| name(w) == "SET_CONFIG" && word(n + 1) != "TRUE");
    statement || into_temporary || in_temporary_schema || session_lock || session_config
}

/// `pg_temp` (or a session's own `pg_temp_N`), the schema of temporary objects.
fn temporary_schema(word: &str) -> bool {
    let name = name(word);
    name == "PG_TEMP"
        || name
            .strip_prefix("PG_TEMP_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
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

    #[test]
    fn changing_the_session_is_refused_in_and_out_of_transactions() {
        for sql in [
            "SET TIME ZONE 'Asia/Tokyo'",
            "set search_path = app",
            "SET SESSION statement_timeout = 0",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET ROLE admin",
            "RESET ALL",
            "LISTEN jobs",
            "UNLISTEN *",
            "DISCARD ALL",
            "PREPARE q AS SELECT 1",
            "DEALLOCATE q",
            "LOAD 'auto_explain'",
            "CREATE TEMP TABLE x (a int)",
            "CREATE LOCAL TEMPORARY TABLE x (a int)",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "SELECT 1 AS a INTO TEMP x",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_catalog.pg_try_advisory_lock_shared($1)",
            "SELECT pg_catalog.set_config('search_path', '', false)",
            "INSERT INTO t VALUES (1); SET x.y = 1",
            "CREATE TABLE pg_temp.x (a int)",
            "CREATE TABLE \"pg_temp\".x AS SELECT 1",
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            "CREATE VIEW v AS SELECT * FROM pg_temp_3.x",
            "SELECT 1 AS a INTO pg_temp.x",
            "SELECT \"pg_advisory_lock\"(1)",
            "SELECT \"pg_catalog\".\"pg_try_advisory_lock\"(1)",
            "SELECT set_config($1, $2, $3)",
            "SELECT set_config('search_path', '', 'false')",
            "SELECT \"set_config\"('search_path', '', false)",
            "DO $$ BEGIN SET search_path = app; END $$",
            "DO LANGUAGE plpgsql $b$ BEGIN IF true THEN LISTEN jobs; END IF; END $b$",
            "DO 'BEGIN PERFORM pg_advisory_lock(1); PERFORM ''x''; END'",
        ] {
            for in_transaction in [false, true] {
                assert!(
                    matches!(
                        refused(sql, in_transaction),
                        Some(RefusedStatement::SessionState { .. })
                    ),
                    "{sql}"
                );
            }
        }
        for sql in [
            "SET LOCAL TIME ZONE 'UTC'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "PREPARE TRANSACTION 'x'",
            "CREATE TEMP TABLE x (a int) ON COMMIT DROP",
            "CREATE TABLE pg_temp.x (a int) ON COMMIT DROP",
            "SELECT set_config('search_path', '', true)",
            "SELECT * FROM pg_temp.x",
            "CREATE TABLE pg_temporary (a int)",
            "DO $$ BEGIN SET LOCAL search_path = app; UPDATE t SET x = 1; END $$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SET search_path = app; END $$",
            "CREATE TABLE temp (a int)",
            "INSERT INTO temp VALUES (1)",
            "WITH x AS (SELECT 1) INSERT INTO temp SELECT * FROM x",
            "SELECT set_config('app.user', $1, true)",
            "SELECT pg_advisory_xact_lock(1), pg_advisory_unlock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "INSERT INTO settings (k) VALUES ('SET')",
            "UPDATE t SET x = 1",
            "SELECT * FROM reset",
        ] {
            assert_eq!(refused(sql, true), None, "{sql}");
        }
    }
}
