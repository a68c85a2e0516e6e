//! Proving a statement short from its compiled program: what lets a write inside a
//! transaction run on the caller's thread.
//!
//! A write inside a transaction cannot run under a time budget: SQLite rolls the whole
//! transaction back when it interrupts one. So it runs inline only when its program, read with
//! `EXPLAIN`, is *straight-line*: every instruction is one of a set that touches a bounded
//! number of rows (one seek, insert or delete each, `O(log n)` pages), and every jump goes
//! forward. Such a program executes each instruction at most once, so its running time is
//! bounded by its length. Loops (scans, `RETURNING`, multi-row `VALUES`), triggers and foreign
//! key actions (sub-programs), functions (user code, or `randomblob(1e9)`), virtual tables,
//! sorting, DDL and transaction control are not in the set, so none of them is ever proven.
//!
//! The proof holds for the schema it was made under: see
//! [`RawConnection::schema_mark`](super::RawConnection::schema_mark).

use super::handle::Handle;
use super::statement::{Prepared, RawValue};
use crate::sql::first_keyword;

/// Instructions that jump to P2 when taken (forward only, in a proven program).
const JUMPS: &[&str] = &[
    "Goto",
    "If",
    "IfNot",
    "IsNull",
    "NotNull",
    "SeekGE",
    "SeekGT",
    "SeekLE",
    "SeekLT",
    "IdxGT",
    "IdxGE",
    "IdxLT",
    "IdxLE",
    "NoConflict",
    "NotFound",
    "Found",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "FkIfZero",
    "Once",
    "IfNullRow",
];

/// Instructions that jump to P2 when it is not zero; with zero they raise an error (the row
/// must exist, the value must be an integer) instead.
const JUMPS_UNLESS_ZERO: &[&str] = &["MustBeInt", "NotExists", "SeekRowid"];

/// Instructions that never jump and do bounded work: registers, one record, one seek, one
/// row written or deleted (with its index entries), one row returned.
const STEPS: &[&str] = &[
    "Transaction",
    "OpenRead",
    "OpenWrite",
    "Close",
    "SoftNull",
    "Null",
    "Variable",
    "Integer",
    "Int64",
    "Real",
    "String8",
    "String",
    "Blob",
    "Copy",
    "SCopy",
    "IntCopy",
    "Affinity",
    "TypeCheck",
    "Cast",
    "RealAffinity",
    "ZeroOrNull",
    "MakeRecord",
    "NewRowid",
    "Insert",
    "IdxInsert",
    "Delete",
    "IdxDelete",
    "Rowid",
    "IdxRowid",
    "Column",
    "DeferredSeek",
    "SeekEnd",
    "FkCounter",
    "FkCheck",
    "Noop",
    "AddImm",
    "Add",
    "Subtract",
    "Multiply",
    "Divide",
    "Remainder",
    "Concat",
    "BitAnd",
    "BitOr",
    "ShiftLeft",
    "ShiftRight",
    "BitNot",
    "Not",
    "And",
    "Or",
    "IsTrue",
    "ReleaseReg",
    "CursorHint",
    "ColumnsUsed",
    "ResultRow",
    "Halt",
    "HaltIfNull",
];

/// One instruction of a program, as `EXPLAIN` lists it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Instruction {
    opcode: String,
    p1: i64,
    p2: i64,
}

/// Whether the first (and only) statement of `sql` compiles, on `handle` under its current
/// schema, to a straight-line program (see the module docs). Anything that cannot be read
/// that way (a statement that does not prepare, several statements) is not proven.
pub(super) fn is_straight_line(handle: &Handle, sql: &str) -> bool {
    program(handle, sql).is_some_and(|program| straight_line(&program))
}

/// Statements whose program is read. Compiling the others may act: a `PRAGMA` that sets a
/// value can take effect as SQLite prepares it, even under `EXPLAIN`.
const LISTED: &[&str] = &["INSERT", "UPDATE", "DELETE", "REPLACE", "SELECT", "WITH"];

/// The instructions of `sql`'s program, `None` if it cannot be listed.
fn program(handle: &Handle, sql: &str) -> Option<Vec<Instruction>> {
    if !first_keyword(sql).is_some_and(|keyword| LISTED.contains(&keyword.as_str())) {
        return None;
    }
    let explain = format!("EXPLAIN {sql}");
    let (Some(mut listing), _) = Prepared::prepare(handle, &explain).ok()? else {
        return None;
    };
    if listing.shape().has_tail {
        return None;
    }
    let mut running = listing.statement().start(&[]).ok()?;
    let mut program = Vec::new();
    while running.step().ok()? {
        let (RawValue::Text(opcode), RawValue::Integer(p1), RawValue::Integer(p2)) =
            (running.column(1), running.column(2), running.column(3))
        else {
            return None;
        };
        program.push(Instruction {
            opcode: String::from_utf8_lossy(opcode).into_owned(),
            p1,
            p2,
        });
    }
    Some(program)
}

/// The rule itself. SQLite lays a program out as `Init` (jumping to the epilogue), the body,
/// which ends in `Halt`, then the epilogue: `Transaction`s, constants, and a `Goto` back to
/// the body's start. The body runs once if every jump in it goes forward and stays in it; the
/// epilogue runs once because only `Init` jumps to it.
pub(super) fn straight_line(program: &[Instruction]) -> bool {
    let Some((init, rest)) = program.split_first() else {
        return false;
    };
    let Some((back, _)) = rest.split_last() else {
        return false;
    };
    if init.opcode != "Init" || back.opcode != "Goto" || back.p2 != 1 {
        return false;
    }
    let Ok(epilogue) = usize::try_from(init.p2) else {
        return false;
    };
    if epilogue < 2 || epilogue > program.len() - 1 || program[epilogue - 1].opcode != "Halt" {
        return false;
    }
    for (at, instruction) in program.iter().enumerate().take(program.len() - 1).skip(1) {
        let opcode = instruction.opcode.as_str();
        let target = usize::try_from(instruction.p2).ok();
        let jumps =
            JUMPS.contains(&opcode) || (JUMPS_UNLESS_ZERO.contains(&opcode) && instruction.p2 != 0);
        if jumps {
            // Forward, and within the body: nothing jumps into the epilogue a second time.
            if at >= epilogue || !target.is_some_and(|to| to > at && to < epilogue) {
                return false;
            }
        } else if !JUMPS_UNLESS_ZERO.contains(&opcode) && !STEPS.contains(&opcode) {
            return false;
        }
        // The main database only: the schema check covers it alone (see
        // `RawConnection::schema_mark`), and an attached one may still need its lock.
        if opcode == "Transaction" && instruction.p1 != 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(ops: &[(&str, i64, i64)]) -> Vec<Instruction> {
        ops.iter()
            .map(|&(opcode, p1, p2)| Instruction {
                opcode: opcode.into(),
                p1,
                p2,
            })
            .collect()
    }

    /// `INSERT INTO t(a) VALUES (?)` as SQLite 3.4x compiles it.
    fn insert() -> Vec<(&'static str, i64, i64)> {
        vec![
            ("Init", 0, 7),
            ("OpenWrite", 0, 2),
            ("Variable", 1, 2),
            ("NewRowid", 0, 1),
            ("MakeRecord", 2, 1),
            ("Insert", 0, 3),
            ("Halt", 0, 0),
            ("Transaction", 0, 1),
            ("Goto", 0, 1),
        ]
    }

    #[test]
    fn an_insert_of_one_row_is_straight_line() {
        assert!(straight_line(&listing(&insert())));
    }

    #[test]
    fn a_backward_jump_is_a_loop() {
        let mut ops = insert();
        ops.insert(5, ("Ne", 1, 3));
        for op in &mut ops {
            if op.0 == "Init" {
                op.2 = 8;
            }
        }
        assert!(!straight_line(&listing(&ops)));
        ops[5].2 = 5;
        assert!(!straight_line(&listing(&ops)), "a jump to itself loops too");
        ops[5].2 = 6;
        assert!(straight_line(&listing(&ops)), "the same jump forward");
    }

    #[test]
    fn a_jump_into_the_epilogue_would_run_the_body_again() {
        let mut ops = insert();
        ops.insert(5, ("IsNull", 1, 8));
        ops[0].2 = 8;
        assert!(!straight_line(&listing(&ops)));
    }

    #[test]
    fn loops_sub_programs_and_functions_are_not_proven() {
        for opcode in [
            "Next",
            "Program",
            "Function",
            "VFilter",
            "SorterSort",
            "Yield",
        ] {
            let mut ops = insert();
            ops.insert(5, (opcode, 0, 0));
            ops[0].2 = 8;
            assert!(!straight_line(&listing(&ops)), "{opcode}");
        }
    }

    #[test]
    fn an_attached_database_is_not_proven() {
        let mut ops = insert();
        ops[7].1 = 2;
        assert!(!straight_line(&listing(&ops)));
    }

    #[test]
    fn a_listing_out_of_shape_is_not_proven() {
        assert!(!straight_line(&[]));
        let mut ops = insert();
        ops[6].0 = "Noop";
        assert!(!straight_line(&listing(&ops)), "no Halt ends the body");
        for past_the_end in [9, 10, 100] {
            let mut ops = insert();
            ops[0].2 = past_the_end;
            assert!(
                !straight_line(&listing(&ops)),
                "Init jumps to {past_the_end}"
            );
        }
        for into_itself in [0, 1] {
            let mut ops = insert();
            ops[0].2 = into_itself;
            assert!(
                !straight_line(&listing(&ops)),
                "Init jumps to {into_itself}"
            );
        }
        let mut ops = insert();
        ops.pop();
        assert!(!straight_line(&listing(&ops)), "no Goto back");
    }

    #[test]
    fn the_shortest_program_is_straight_line() {
        let halt = [("Init", 0, 2), ("Halt", 0, 0), ("Goto", 0, 1)];
        assert!(straight_line(&listing(&halt)));
    }

    #[test]
    fn a_program_that_touches_no_table_is_straight_line() {
        let select = [
            ("Init", 0, 4),
            ("Integer", 1, 1),
            ("ResultRow", 1, 1),
            ("Halt", 0, 0),
            ("Goto", 0, 1),
        ];
        assert!(straight_line(&listing(&select)));
    }

    #[test]
    fn some_instructions_jump_only_with_a_target() {
        for opcode in JUMPS_UNLESS_ZERO {
            let mut ops = insert();
            ops.insert(5, (opcode, 1, 0));
            ops[0].2 = 8;
            assert!(
                straight_line(&listing(&ops)),
                "{opcode} raises an error, no jump"
            );
            ops[5].2 = 2;
            assert!(!straight_line(&listing(&ops)), "{opcode} jumps back");
        }
    }

    /// What SQLite really compiles, on a schema with an index, a foreign key with an action,
    /// a unique column and a trigger.
    mod compiled {
        use crate::raw::{RawConnection, RawValue};

        fn connection() -> RawConnection {
            let mut conn = RawConnection::establish(":memory:").expect("opens");
            conn.run_once("PRAGMA foreign_keys = ON").expect("set");
            for ddl in [
                "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE)",
                "CREATE TABLE posts(id INTEGER PRIMARY KEY, \
                 user_id INTEGER REFERENCES users(id) ON DELETE CASCADE, title TEXT)",
                "CREATE INDEX posts_user ON posts(user_id)",
                "CREATE TABLE audited(x)",
                "CREATE TABLE log(x)",
                "CREATE TRIGGER audit AFTER INSERT ON audited BEGIN INSERT INTO log SELECT x FROM audited; END",
                "ATTACH ':memory:' AS other",
                "CREATE TABLE other.t(x)",
            ] {
                conn.run_once(ddl).expect(ddl);
            }
            conn
        }

        #[test]
        fn bounded_statements_are_proven() {
            let conn = connection();
            for sql in [
                "INSERT INTO posts(user_id, title) VALUES (?, ?)",
                "INSERT INTO users(name, email) VALUES (?, ?) \
                 ON CONFLICT(email) DO UPDATE SET name = excluded.name",
                "UPDATE users SET name = ? WHERE id = ?",
                "UPDATE users SET name = ? WHERE email = ?",
                "DELETE FROM posts WHERE id = ?",
                "SELECT id, name FROM users WHERE id = ?",
                "SELECT 1",
                "INSERT INTO posts(user_id, title) VALUES (?, ?);",
            ] {
                assert!(conn.proves_short(sql), "{sql}");
            }
        }

        #[test]
        fn unbounded_or_unknown_statements_are_not() {
            let conn = connection();
            for sql in [
                // A scan, a cascade, a trigger, several rows, rows back, a function.
                "UPDATE posts SET title = ? WHERE title = ?",
                "DELETE FROM users WHERE id = ?",
                "INSERT INTO audited VALUES (?)",
                "INSERT INTO posts(user_id, title) VALUES (?, ?), (?, ?)",
                "INSERT INTO posts(user_id, title) SELECT id, name FROM users",
                "INSERT INTO posts(user_id, title) VALUES (?, ?) RETURNING id",
                "INSERT INTO posts(user_id, title) VALUES (?, randomblob(?))",
                "SELECT * FROM users",
                // An attached database, DDL, transaction control.
                "INSERT INTO other.t VALUES (?)",
                "CREATE TABLE t2(x)",
                "DROP TABLE log",
                "COMMIT",
                "SAVEPOINT s",
                // Not one statement, or none that prepares.
                "INSERT INTO log VALUES (1); INSERT INTO log VALUES (2)",
                "INSERT INTO nowhere VALUES (1)",
                "EXPLAIN INSERT INTO log VALUES (1)",
                "",
            ] {
                assert!(!conn.proves_short(sql), "{sql}");
            }
        }

        /// A pragma that sets a value may act as SQLite compiles it: it is not even read.
        #[test]
        fn a_pragma_is_not_compiled_to_be_read() {
            let mut conn = connection();
            assert!(!conn.proves_short("PRAGMA foreign_keys = OFF"));
            let mut pragma = conn
                .statement("PRAGMA foreign_keys")
                .expect("prepares")
                .expect("a statement")
                .start(&[])
                .expect("starts");
            assert!(pragma.step().expect("steps"));
            assert_eq!(pragma.column(0), RawValue::Integer(1), "still on");
        }
    }
}
