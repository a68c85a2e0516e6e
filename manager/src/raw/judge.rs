//! What each action SQLite reports to the authorizer means for litemux: whether it writes,
//! touches the connection's session, changes its namespace, or is refused outright. Pure: the
//! [`guard`](super::guard) applies it.

use std::ffi::c_int;

use libsqlite3_sys as ffi;

use crate::sql::Facts;

/// PRAGMAs that read a setting of the connection, not of the file: a setting changed at run
/// time is the writer's (readers keep the ones they opened with), so reading one is read there.
const CONNECTION_PRAGMAS: &[&str] = &[
    "analysis_limit",
    "automatic_index",
    "busy_timeout",
    "cache_size",
    "cache_spill",
    "cell_size_check",
    "checkpoint_fullfsync",
    "collation_list",
    "database_list",
    "defer_foreign_keys",
    "foreign_keys",
    "fullfsync",
    "function_list",
    "ignore_check_constraints",
    "journal_size_limit",
    "legacy_alter_table",
    "mmap_size",
    "module_list",
    "read_uncommitted",
    "recursive_triggers",
    "reverse_unordered_selects",
    "secure_delete",
    "synchronous",
    "temp_store",
    "threads",
    "trusted_schema",
    "wal_autocheckpoint",
    "writable_schema",
];

/// PRAGMAs whose argument is the subject of a query, not a new value.
const QUERY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Functions whose result is the connection's own state: its last insert and its changes.
const SESSION_FUNCTIONS: &[&str] = &["last_insert_rowid", "changes", "total_changes"];

/// PRAGMAs that act on the file even without an argument.
const ACTING_PRAGMAS: &[&str] = &["optimize", "wal_checkpoint", "incremental_vacuum"];

/// What one authorizer call says: `action` on `name` (a table, a PRAGMA, a file) with
/// `argument` (a column, a PRAGMA's value) in database `schema`.
pub(super) fn judge(
    action: c_int,
    name: Option<&str>,
    argument: Option<&str>,
    schema: Option<&str>,
) -> Facts {
    let in_session = schema.is_some_and(|s| !s.eq_ignore_ascii_case("main"));
    match action {
        ffi::SQLITE_READ => Facts {
            session: in_session || name.is_some_and(reads_a_connection_setting),
            unresolved: schema.is_none(),
            ..Facts::default()
        },
        // What the connection last did is the writer's to say: a reader never wrote.
        ffi::SQLITE_FUNCTION => Facts {
            session: argument.is_some_and(|f| {
                SESSION_FUNCTIONS
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(f))
            }),
            ..Facts::default()
        },
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE => Facts::default(),
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => Facts::default(),
        ffi::SQLITE_PRAGMA => pragma(name.unwrap_or(""), argument, schema),
        ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_ATTACH
        | ffi::SQLITE_DETACH => Facts {
            writes: true,
            session: true,
            namespace: true,
            ..Facts::default()
        },
        // A virtual table outside `main` (`CREATE VIRTUAL TABLE temp.t ...`) is a session
        // object too, which readers lack.
        ffi::SQLITE_CREATE_VTABLE if in_session => Facts {
            writes: true,
            session: true,
            namespace: true,
            ..Facts::default()
        },
        // Every other action changes a table, the schema or statistics.
        _ => Facts {
            writes: true,
            session: in_session,
            ..Facts::default()
        },
    }
}

/// Whether `table` is the table-valued form of a PRAGMA that reads a setting of the
/// connection (`SELECT * FROM pragma_foreign_keys`).
fn reads_a_connection_setting(table: &str) -> bool {
    table
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("pragma_"))
        && CONNECTION_PRAGMAS
            .iter()
            .any(|pragma| pragma.eq_ignore_ascii_case(&table[7..]))
}

fn pragma(name: &str, argument: Option<&str>, schema: Option<&str>) -> Facts {
    let name = name.to_ascii_lowercase();
    let name = name.as_str();
    let on_main = schema.is_none_or(|s| s.eq_ignore_ascii_case("main"));
    let refused = match name {
        "journal_mode" if argument.is_some() && on_main => Some(
            "litemux refuses to change journal_mode at run time (it needs the file to itself, \
             which litemux's readers never give it); set it with the `journal_mode` option",
        ),
        "locking_mode" if argument.is_some() && on_main => Some(
            "litemux refuses to change locking_mode (EXCLUSIVE would lock its readers out of \
             the file for good)",
        ),
        // One flag per connection, whatever schema is named.
        "query_only" if argument.is_some() => Some(
            "litemux refuses to change query_only (readers are read-only by design; on the \
             shared writer it would stop every write); open with `mode=ro` for a read-only \
             database",
        ),
        // One setting per connection, whatever schema is named.
        "busy_timeout" if argument.is_some() => Some(
            "litemux refuses to change busy_timeout at run time (it would replace litemux's \
             own lock waits, which never hold a caller's thread and stop when the caller is \
             gone); set it with the `busy_timeout` option",
        ),
        // SQLCipher's: the key is the `key` option's, given to every connection as it opens.
        "key" | "rekey" | "hexkey" | "hexrekey" if argument.is_some() && on_main => Some(
            "litemux refuses to set or change the SQLCipher key at run time (its readers, and \
             every connection it opens later, keep the `key` option's); set it with the `key` \
             option, and rekey a file while no litemux database has it open",
        ),
        _ => None,
    };
    let sets = argument.is_some() && !QUERY_PRAGMAS.contains(&name);
    Facts {
        writes: sets || ACTING_PRAGMAS.contains(&name) || refused.is_some(),
        configures: sets,
        session: (schema.is_some() && !on_main)
            || (argument.is_none() && CONNECTION_PRAGMAS.contains(&name)),
        refused,
        ..Facts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_setting_a_pragma_writes() {
        let set = |name, arg, schema| judge(ffi::SQLITE_PRAGMA, Some(name), arg, schema);
        assert!(set("query_only", Some("0"), None).writes);
        assert!(set("query_only", Some("1"), None).refused.is_some());
        assert!(set("query_only", Some("1"), Some("aux")).refused.is_some());
        assert!(set("busy_timeout", Some("10"), None).refused.is_some());
        assert!(
            set("BUSY_TIMEOUT", Some("10"), Some("aux"))
                .refused
                .is_some()
        );
        assert!(set("busy_timeout", None, None).refused.is_none());
        assert!(set("QUERY_ONLY", Some("0"), Some("main")).writes);
        assert!(!set("query_only", None, None).writes);
        assert!(!set("table_info", Some("t"), None).writes);
        assert!(set("wal_checkpoint", None, None).writes);
        assert!(set("user_version", Some("1"), Some("aux")).session);
        assert!(set("journal_mode", Some("delete"), None).refused.is_some());
        assert!(set("journal_mode", None, None).refused.is_none());
        assert!(
            set("journal_mode", Some("delete"), Some("aux"))
                .refused
                .is_none()
        );
        assert!(
            set("locking_mode", Some("exclusive"), Some("main"))
                .refused
                .is_some()
        );
    }

    #[test]
    fn reading_a_setting_of_the_connection_is_the_session() {
        let read = |name, schema| judge(ffi::SQLITE_PRAGMA, Some(name), None, schema);
        assert!(read("foreign_keys", None).session);
        assert!(read("Recursive_Triggers", Some("main")).session);
        assert!(!read("foreign_keys", None).writes);
        assert!(!read("user_version", None).session, "a setting of the file");
        assert!(!read("table_info", None).session);
        let set = judge(ffi::SQLITE_PRAGMA, Some("foreign_keys"), Some("off"), None);
        assert!(set.writes && !set.session);
        let table = |name| judge(ffi::SQLITE_READ, Some(name), Some("foreign_keys"), None);
        assert!(table("pragma_foreign_keys").session);
        assert!(table("PRAGMA_Cache_Size").session);
        assert!(!table("pragma_user_version").session);
        assert!(!table("pragma_").session && !table("t").session);
    }

    #[test]
    fn names_outside_main_are_the_session() {
        let read = |schema| judge(ffi::SQLITE_READ, Some("t"), Some("x"), schema);
        assert!(!read(Some("main")).session);
        assert!(read(Some("temp")).session);
        assert!(read(Some("aux")).session);
        assert!(!read(Some("temp")).writes);
        assert!(read(None).unresolved && !read(Some("main")).unresolved);
        let temp = judge(ffi::SQLITE_CREATE_TEMP_TABLE, Some("t"), None, Some("temp"));
        assert!(temp.writes && temp.namespace);
        assert!(judge(ffi::SQLITE_INSERT, Some("t"), None, Some("main")).writes);
        assert!(!judge(ffi::SQLITE_TRANSACTION, Some("BEGIN"), None, None).writes);
    }
}
