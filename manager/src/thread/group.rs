//! Group commit: autocommit writes that queue up behind each other on the writer share one
//! transaction, so SQLite commits (and writes its WAL frames) once for all of them.
//!
//! Each caller still gets exactly what autocommit would have given it:
//! - **Its own outcome.** A failing statement fails alone: inside a transaction SQLite undoes
//!   just the failed statement (its statement journal gives each statement the same atomicity
//!   autocommit does), and the others go on.
//! - **Acknowledged only after COMMIT.** Nobody hears back before the group is durable.
//! - **Nothing lost to a neighbour.** Some failures make SQLite roll back the whole
//!   transaction (`OR ROLLBACK`, `RAISE(ROLLBACK)`, I/O errors): the statement that caused it
//!   gets its error and the members before it, undone, run again in a new transaction. When
//!   COMMIT itself fails (a deferred foreign key, a full disk), the group is rolled back and
//!   every member runs again alone, in autocommit, for its own verdict.
//!
//! No savepoint per member: with the statement journal it would add two statements per member
//! and change nothing, except that rolling back to it would also undo what `OR FAIL` keeps
//! of a failing statement — which autocommit keeps.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;

use crate::Result;
use crate::conn::{Cancel, Connection};
use crate::telemetry::{Caller, Run};

/// One queued autocommit write that may share a transaction with its neighbours.
pub(crate) trait Member: Send {
    /// Runs the statement: inside the group's transaction when `grouped`, else alone in
    /// autocommit. May run more than once (see the module docs); the last outcome stands.
    fn run(&mut self, conn: &mut Connection, grouped: bool);

    /// Sends the caller the outcome of the last run.
    fn answer(self: Box<Self>);

    /// Set when the caller stopped waiting: the member is then stopped, or skipped.
    fn cancel(&self) -> &Cancel;

    /// Who queued it: it runs inside that caller's span.
    fn caller(&self) -> &Caller;
}

/// A member that runs `statement` (one DML statement, `sql`), and the receiver of its outcome.
pub(crate) fn member<R: Send + 'static>(
    sql: String,
    statement: impl FnMut(&mut Connection, &str) -> Result<R> + Send + 'static,
) -> (Box<dyn Member>, oneshot::Receiver<Result<R>>, Cancel) {
    let (reply, answer) = oneshot::channel();
    let cancel = Cancel::default();
    let member = Pending {
        sql,
        statement,
        outcome: None,
        reply,
        cancel: cancel.clone(),
        caller: Caller::here(),
    };
    (Box::new(member), answer, cancel)
}

struct Pending<R, F> {
    sql: String,
    statement: F,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
    cancel: Cancel,
    caller: Caller,
}

impl<R, F> Member for Pending<R, F>
where
    R: Send + 'static,
    F: FnMut(&mut Connection, &str) -> Result<R> + Send + 'static,
{
    fn run(&mut self, conn: &mut Connection, grouped: bool) {
        // Cleared first, so a run that panics does not leave an earlier run's outcome behind.
        self.outcome = None;
        let outcome = (self.statement)(conn, &self.sql);
        // Alone, the statement must leave the writer in autocommit, as any autocommit job.
        // In a group the transaction is the group's, and the group checks it.
        self.outcome = Some(if grouped {
            outcome
        } else {
            conn.restore_base(false, &self.sql, outcome)
        });
    }

    fn answer(self: Box<Self>) {
        // A member that panicked has no outcome: dropping the sender tells its caller the
        // connection was lost, as for any job that panics.
        if let Some(outcome) = self.outcome {
            let _ = self.reply.send(outcome);
        }
    }

    fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// Runs `members`, queued in this order on a writer in autocommit mode, and answers each.
pub(crate) fn commit(conn: &mut Connection, members: Vec<Box<dyn Member>>) {
    let mut waiting = VecDeque::from(members);
    while waiting.len() > 1 {
        let size = waiting.len();
        // The group's own BEGIN and COMMIT belong to no one caller: they are traced in the
        // first member's span, so they are not orphans.
        let lead = waiting.front().map(|m| m.caller().clone());
        let control = |conn: &mut Connection, sql: &str| match &lead {
            Some(lead) => lead.enter(|waited| {
                conn.set_run(Run {
                    inline: false,
                    waited,
                    group: size,
                    submitted: None,
                });
                conn.control(sql)
            }),
            None => conn.control(sql),
        };
        // Not waited for here: no caller's cancel flag or statement timeout guards the
        // group's own BEGIN. If another process holds the lock, each member waits for it on
        // its own, under its own guards.
        if conn
            .without_lock_waits(|conn| control(conn, "BEGIN IMMEDIATE"))
            .is_err()
        {
            // The write lock is not to be had (another process holds it): each statement
            // meets that on its own.
            break;
        }
        let commits = conn.commits();
        let mut ran = Vec::with_capacity(waiting.len());
        let mut ended_by = None;
        while let Some(mut member) = waiting.pop_front() {
            // Nobody waits for it: it never runs (a stopped write would end the group's
            // transaction and make the others run again).
            if member.cancel().is_cancelled() {
                continue;
            }
            run_guarded(&mut *member, conn, size);
            if conn.is_autocommit() {
                ended_by = Some(member);
                break;
            }
            ran.push(member);
        }
        match ended_by {
            // The member ended the group's transaction. A DML statement only ever rolls it
            // back; the members before it were undone with it and run again. (A closure that
            // committed it, against `with_writer_for`'s contract, is told apart by the
            // commit count, so nothing runs twice.)
            Some(member) if conn.commits() == commits => {
                member.answer();
                for undone in ran.into_iter().rev() {
                    waiting.push_front(undone);
                }
            }
            Some(member) => {
                ran.into_iter().for_each(|m| m.answer());
                member.answer();
            }
            None => match control(conn, "COMMIT") {
                Ok(()) => {
                    conn.meters().group_commit(ran.len());
                    ran.into_iter().for_each(|m| m.answer());
                }
                Err(e) => {
                    tracing::debug!(target: "litemux", error = %e, members = ran.len(), "group commit failed; running its members alone");
                    conn.rollback_open_transaction();
                    waiting = ran.into();
                    break;
                }
            },
        }
    }
    for mut member in waiting {
        if member.cancel().is_cancelled() {
            continue;
        }
        run_guarded(&mut *member, conn, 0);
        member.answer();
    }
}

/// Runs `member` under its caller's guards (its cancel flag, the statement timeout), keeping
/// a panic in it (user code, through the escape hatch) from taking the writer down; the
/// member is then answered with `ConnectionLost`. A member stopped by its guards fails with
/// [`Error::Interrupted`](crate::Error::Interrupted); if it was writing, SQLite rolls the
/// group's transaction back and the members before it run again.
fn run_guarded(member: &mut dyn Member, conn: &mut Connection, group: usize) {
    let caller = member.caller().clone();
    caller.enter(|waited| {
        conn.set_run(Run {
            inline: false,
            waited,
            group,
            submitted: Some(caller.submitted()),
        });
        conn.arm(member.cancel());
        if catch_unwind(AssertUnwindSafe(|| member.run(conn, group > 0))).is_err() {
            tracing::error!(target: "litemux", "a statement panicked on the writer thread");
        }
        conn.disarm();
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::conn::Context;
    use crate::conn::record::Record;
    use crate::conn::run::{ExecuteResult, Limit};
    use crate::{Options, Role};

    fn writer() -> Connection {
        let context = Context::for_tests(None);
        let mut conn = Connection::open(&Options::memory(), Role::Writer, context).unwrap();
        conn.batch("CREATE TABLE t(x INTEGER)", false).unwrap();
        conn
    }

    fn insert(x: i64) -> (Box<dyn Member>, oneshot::Receiver<Result<ExecuteResult>>) {
        let (member, answer, _) = member(format!("INSERT INTO t(x) VALUES ({x})"), |conn, sql| {
            conn.execute(sql, &[], Record::Yes)
        });
        (member, answer)
    }

    fn xs(conn: &mut Connection) -> Vec<i64> {
        conn.fetch(
            "SELECT x FROM t ORDER BY rowid",
            &[],
            Limit::All,
            Record::Yes,
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect()
    }

    #[test]
    fn nobody_hears_back_before_the_commit() {
        let mut conn = writer();
        let (first, first_answer) = insert(1);
        let (second, second_answer) = insert(2);
        let earlier = Arc::new(Mutex::new(vec![first_answer, second_answer]));
        let seen = Arc::new(Mutex::new(None));
        let (last, last_answer, _) = member("INSERT INTO t(x) VALUES (3)".into(), {
            let earlier = Arc::clone(&earlier);
            let seen = Arc::clone(&seen);
            move |conn, sql| {
                let answered = earlier
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .map(|answer| answer.try_recv())
                    .filter(Result::is_ok)
                    .count();
                *seen.lock().unwrap() = Some((answered, conn.is_autocommit()));
                conn.execute(sql, &[], Record::Yes)
            }
        });
        commit(&mut conn, vec![first, second, last]);
        assert_eq!(
            *seen.lock().unwrap(),
            Some((0, false)),
            "the third ran in the group's transaction, before anyone was answered"
        );
        for answer in earlier.lock().unwrap().iter_mut() {
            assert_eq!(answer.try_recv().unwrap().unwrap().rows_affected, 1);
        }
        assert!(last_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(xs(&mut conn), [1, 2, 3]);
    }

    #[test]
    fn a_member_that_commits_the_group_early_does_not_make_the_others_run_twice() {
        let mut conn = writer();
        let (first, first_answer) = insert(1);
        // Breaks `with_writer_for`'s contract: it ends the transaction it runs in.
        let (rogue, rogue_answer, _) = member("COMMIT".into(), |conn, sql| conn.control(sql));
        let (last, last_answer) = insert(3);
        commit(&mut conn, vec![first, rogue, last]);
        assert!(first_answer.blocking_recv().unwrap().is_ok());
        assert!(rogue_answer.blocking_recv().unwrap().is_ok());
        assert!(last_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(xs(&mut conn), [1, 3], "the committed insert ran once");
        assert!(conn.is_autocommit());
    }
}
