//! How litemux sets up the process's SQLite library (`litemux::sqlite_library`): each case runs
//! in a fresh child process, since the setup happens once per process.

use std::ffi::{CString, c_int};
use std::process::Command;

use libsqlite3_sys as ffi;
use litemux::{Database, SqliteLibrary};

/// What a child process found: litemux's report, and SQLite's own answers.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    reported: String,
    /// Whether a new connection gets its own mutex (serialized mode) or not (multi-thread).
    connection_mutex: bool,
    /// Whether SQLite counts the memory it allocates.
    memory_statistics: bool,
}

/// Marks the child's result line among anything else the test harness prints.
const RESULT: &str = "LITEMUX_LIBRARY_RESULT";

/// Run in a child process by the tests below: sets the process up as `LITEMUX_LIBRARY_CASE`
/// says, runs a concurrent workload through litemux, and prints what it found.
#[test]
#[ignore = "helper process for the tests of this module"]
fn report_sqlite_library() {
    let Ok(case) = std::env::var("LITEMUX_LIBRARY_CASE") else {
        return;
    };
    match case.as_str() {
        "litemux_first" => {}
        "kept_defaults" => assert!(litemux::keep_sqlite_defaults()),
        "diesel_first" => {
            use litemux::diesel::Connection as _;
            let _ = litemux::diesel::SqliteConnection::establish(":memory:").unwrap();
        }
        other => panic!("unknown case {other}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(concurrent_workload(&dir.path().join("t.db")));
    // A keep_sqlite_defaults that comes after the first open is too late.
    assert!(!litemux::keep_sqlite_defaults() || case == "kept_defaults");
    let found = Found {
        reported: format!("{:?}", litemux::sqlite_library()),
        connection_mutex: connection_has_mutex(),
        memory_statistics: memory_used() > 0,
    };
    println!(
        "{RESULT} {} {} {}",
        found.reported, found.connection_mutex, found.memory_statistics
    );
}

/// Readers, the writer, transactions and streams at once from many tasks, checked: in
/// multi-thread mode SQLite no longer serializes calls on a connection, so this is litemux
/// alone keeping each connection to one thread at a time.
async fn concurrent_workload(path: &std::path::Path) {
    let db = Database::open_with(litemux::Options::new(path).readers(3))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(task INTEGER, n INTEGER, note TEXT)")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16_i64)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                for n in 0..50_i64 {
                    if n % 10 == 0 {
                        let tx = db.begin().await.unwrap();
                        tx.execute(
                            "INSERT INTO t VALUES (?, ?, ?)",
                            (task, n, format!("{task}-{n}")),
                        )
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                    } else {
                        db.execute(
                            "INSERT INTO t VALUES (?, ?, ?)",
                            (task, n, format!("{task}-{n}")),
                        )
                        .await
                        .unwrap();
                    }
                    let mine = db
                        .fetch_all("SELECT n, note FROM t WHERE task = ? ORDER BY n", (task,))
                        .await
                        .unwrap();
                    assert_eq!(mine.len() as i64, n + 1);
                    for (i, row) in mine.iter().enumerate() {
                        assert_eq!(row.get::<i64>(0).unwrap(), i as i64);
                        assert_eq!(row.get::<String>(1).unwrap(), format!("{task}-{i}"));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total: i64 = db
        .fetch_one("SELECT count(*) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(total, 16 * 50);
    db.close().await.unwrap();
}

#[allow(unsafe_code)] // asks SQLite itself, not litemux
fn connection_has_mutex() -> bool {
    let name = CString::new(":memory:").unwrap();
    let mut db = std::ptr::null_mut();
    // SAFETY: a valid C string and out-pointer; the flags name no threading mode, so the
    // connection gets the library's.
    let rc = unsafe {
        ffi::sqlite3_open_v2(
            name.as_ptr(),
            &mut db,
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    // SAFETY: `db` was just opened and is closed right after.
    let has = unsafe { !ffi::sqlite3_db_mutex(db).is_null() };
    // SAFETY: as above; nothing else uses `db`.
    unsafe { ffi::sqlite3_close(db) };
    has
}

#[allow(unsafe_code)] // asks SQLite itself, not litemux
fn memory_used() -> i64 {
    let (mut current, mut highwater) = (0_i64, 0_i64);
    // SAFETY: valid out-pointers; reading a status counter has no other effect.
    let rc = unsafe {
        ffi::sqlite3_status64(
            ffi::SQLITE_STATUS_MEMORY_USED,
            &mut current,
            &mut highwater,
            0 as c_int,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    current
}

fn run_case(case: &str) -> Found {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_library::report_sqlite_library",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LITEMUX_LIBRARY_CASE", case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.split_once(RESULT).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no result line in: {stdout}"));
    let fields: Vec<&str> = line.split(' ').collect();
    Found {
        reported: fields[0].to_owned(),
        connection_mutex: fields[1] == "true",
        memory_statistics: fields[2] == "true",
    }
}

#[test]
fn litemux_opening_first_sets_sqlite_up_without_connection_mutexes_or_memory_statistics() {
    assert_eq!(
        run_case("litemux_first"),
        Found {
            reported: format!("{:?}", Some(SqliteLibrary::Tuned)),
            connection_mutex: false,
            memory_statistics: false,
        }
    );
}

#[test]
fn keep_sqlite_defaults_leaves_serialized_mode_and_memory_statistics() {
    assert_eq!(
        run_case("kept_defaults"),
        Found {
            reported: format!("{:?}", Some(SqliteLibrary::KeptDefaults)),
            connection_mutex: true,
            memory_statistics: true,
        }
    );
}

#[test]
fn sqlite_initialized_by_someone_else_is_left_as_found_and_litemux_works() {
    assert_eq!(
        run_case("diesel_first"),
        Found {
            reported: format!("{:?}", Some(SqliteLibrary::FoundInitialized)),
            connection_mutex: true,
            memory_statistics: true,
        }
    );
}
