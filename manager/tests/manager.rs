//! The manager: several databases by alias or path.

use litemux::{Error, Manager};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_reachable_by_alias_and_path() {
    let (a, b) = (TempDb::new(), TempDb::new());
    let m = Manager::new();
    let path_a = a.path.to_str().unwrap();
    m.open(path_a, "main").await.unwrap();
    m.open(&b.url("?readers=1"), "logs").await.unwrap();
    m.get("main")
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .await
        .unwrap();
    m.get("logs")
        .unwrap()
        .execute_batch("CREATE TABLE l(y)")
        .await
        .unwrap();
    assert!(
        m.get(path_a)
            .unwrap()
            .same_database(&m.get("main").unwrap())
    );
    assert!(
        m.get("main")
            .unwrap()
            .fetch_all("SELECT * FROM l", ())
            .await
            .is_err(),
        "separate files"
    );
    let mut aliases = m.aliases();
    aliases.sort();
    assert_eq!(aliases, ["logs", "main"]);
    m.close("logs").await.unwrap();
    assert!(matches!(m.get("logs"), Err(Error::UnknownAlias(_))));
    let main = m.get("main").unwrap();
    m.shutdown().await.unwrap();
    assert!(matches!(
        main.fetch_all("SELECT 1", ()).await,
        Err(Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_alias_is_an_error_and_creates_nothing() {
    let t = TempDb::new();
    let m = Manager::new();
    m.open(t.path.to_str().unwrap(), "main").await.unwrap();
    let typo = t.dir.path().join("mian");
    let e = m.get("mian").unwrap_err();
    assert!(matches!(&e, Error::UnknownAlias(a) if a == "mian"), "{e}");
    assert!(m.get(typo.to_str().unwrap()).is_err());
    assert!(matches!(m.close("mian").await, Err(Error::UnknownAlias(_))));
    assert!(!typo.exists() && !std::path::Path::new("mian").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_database_by_path_leaves_the_others_reachable_by_path() {
    let (a, b, c) = (TempDb::new(), TempDb::new(), TempDb::new());
    let m = Manager::new();
    let paths = [&a, &b, &c].map(|t| t.path.to_str().unwrap().to_owned());
    for (path, alias) in paths.iter().zip(["main", "logs", "cache"]) {
        m.open(path, alias).await.unwrap();
    }
    m.close(&paths[1]).await.unwrap();
    assert!(matches!(m.get(&paths[1]), Err(Error::UnknownAlias(_))));
    assert!(matches!(m.get("logs"), Err(Error::UnknownAlias(_))));
    for (path, alias) in [(&paths[0], "main"), (&paths[2], "cache")] {
        let by_path = m.get(path).unwrap();
        assert!(by_path.same_database(&m.get(alias).unwrap()), "{alias}");
        by_path.execute_batch("CREATE TABLE t(x)").await.unwrap();
    }
    let debug = format!("{m:?}");
    assert!(
        debug.starts_with("Manager") && debug.contains("\"main\"") && !debug.contains("\"logs\""),
        "{debug}"
    );
    m.shutdown().await.unwrap();
}

/// An alias opened again on another file leaves its old path: `get` and `close` by the old path
/// say `UnknownAlias` instead of reaching (and closing) the new file's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_opened_again_on_another_file_forgets_the_old_path() {
    let (a, b) = (TempDb::new(), TempDb::new());
    let (path_a, path_b) = (a.path.to_str().unwrap(), b.path.to_str().unwrap());
    let m = Manager::new();
    m.open(path_a, "main").await.unwrap();
    let on_b = m.open(path_b, "main").await.unwrap();
    match m.get(path_a) {
        Err(Error::UnknownAlias(_)) => {}
        Ok(db) => panic!(
            "get({path_a}) returned the database of {path_b}: {}",
            db.same_database(&on_b)
        ),
        Err(e) => panic!("{e}"),
    }
    // Closing by the old path closes the other file's database.
    let closed = m.close(path_a).await;
    assert!(
        matches!(closed, Err(Error::UnknownAlias(_))),
        "close({path_a}) closed {path_b}'s database: {closed:?}"
    );
    assert!(m.get("main").is_ok());
    m.shutdown().await.unwrap();
}

/// One file open under two aliases: closing one alias leaves the path leading to the file
/// through the other (the manager keeps every alias of a path, and forgets only the closed one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_of_two_aliases_of_a_file_keeps_its_path_reachable() {
    let t = TempDb::new();
    let path = t.path.to_str().unwrap();
    let m = Manager::new();
    let first = m.open(path, "first").await.unwrap();
    m.open(path, "second").await.unwrap();
    m.close("second").await.unwrap();
    let by_path = m.get(path);
    assert!(
        by_path.as_ref().is_ok_and(|db| db.same_database(&first)),
        "{path} is still open as `first`, but get says {by_path:?}"
    );
    assert!(matches!(m.get("second"), Err(Error::UnknownAlias(_))));
    // By the path, the latest alias still open is closed: then nothing is left.
    m.close(path).await.unwrap();
    assert!(matches!(m.get("first"), Err(Error::UnknownAlias(_))));
    assert!(matches!(m.get(path), Err(Error::UnknownAlias(_))));
    m.shutdown().await.unwrap();
}

/// A shutdown that runs while an open is still opening neither waits for that open nor
/// trips over it: the open ends after the shutdown, on its own (an open after the shutdown,
/// which a manager allows), and the next shutdown closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_an_open_neither_hangs_nor_loses_the_late_database() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    let (a, b) = (TempDb::new(), TempDb::new());
    let m = Manager::new();
    let first = m.open(a.path.to_str().unwrap(), "first").await.unwrap();
    let (entered, has_entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((entered, released))));
    let held = Arc::new(AtomicBool::new(false));
    let options = b.options().readers(1).on_connect(move |_| {
        // The first connection opened (the writer) waits for the test; the rest go on.
        if !held.swap(true, Ordering::SeqCst)
            && let Some((entered, released)) = gate.lock().unwrap().take()
        {
            let _ = entered.send(());
            let _ = released.recv();
        }
        Ok(())
    });
    let late = tokio::spawn({
        let m = m.clone();
        let url = b.path.to_str().unwrap().to_owned();
        async move { m.open_with(&url, "late", options).await }
    });
    tokio::task::spawn_blocking(move || has_entered.recv())
        .await
        .unwrap()
        .expect("the late open started");
    tokio::time::timeout(std::time::Duration::from_secs(20), m.shutdown())
        .await
        .expect("shutdown waited for an open it does not own")
        .unwrap();
    assert!(matches!(
        first.fetch_all("SELECT 1", ()).await,
        Err(Error::Closed)
    ));
    release.send(()).unwrap();
    let late = late.await.expect("no panic").expect("the late open");
    late.execute_batch("CREATE TABLE t(x)").await.unwrap();
    m.shutdown().await.unwrap();
    assert!(matches!(
        late.fetch_all("SELECT 1", ()).await,
        Err(Error::Closed)
    ));
    assert!(m.aliases().is_empty());
}

/// Opening an alias again closes the handle it replaces. If that close fails (here, its
/// history file cannot be written), the open itself still succeeded: the alias leads to the
/// new database, so `open` must say so, not fail with an error `Database::open` never gives
/// and leave the caller without the handle it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_an_alias_succeeds_even_if_closing_the_replaced_handle_fails() {
    let (a, b) = (TempDb::new(), TempDb::new());
    let m = Manager::new();
    let unwritable = a.dir.path().join("no/such/dir/history.jsonl");
    let path_a = a.path.to_str().unwrap();
    m.open_with(path_a, "main", a.options().history_file(&unwritable))
        .await
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .await
        .unwrap();
    let reopened = m.open(b.path.to_str().unwrap(), "main").await;
    let on_b = m.get("main").unwrap();
    match reopened {
        Ok(db) => assert!(db.same_database(&on_b)),
        Err(e) => panic!(
            "open reported {e:?}, yet `main` is open on {}",
            b.path.display()
        ),
    }
    on_b.execute_batch("CREATE TABLE u(y)").await.unwrap();
    m.shutdown().await.unwrap();
}
