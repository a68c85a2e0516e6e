//! The reader pool under a gated connector.

use super::*;

/// Reads through a checked-out reader, on its thread.
async fn read_checked_out(readers: &Readers) -> i64 {
    let reader = readers.get().await.unwrap();
    reader.call(read).await.unwrap()
}

fn read_idle(readers: &Readers) -> Option<i64> {
    match readers.try_idle(|conn| Attempt::Ran(read(conn))) {
        Attempt::Ran(x) => Some(x),
        Attempt::Busy => None,
        Attempt::Overran => panic!("a one-row read overran its budget"),
    }
}

/// Reads on the idle path once the reader last used is free again. A checked-out reader goes
/// back from its own thread just after answering, so for a moment the idle path may find it
/// busy (and leave the read to the pool, as it should).
async fn read_idle_once_free(readers: &Readers) -> i64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(x) = read_idle(readers) {
            return x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle path never found a free reader"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_reader_that_fails_to_open_fails_its_checkout_and_takes_no_place() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, exits) = readers(dir.path(), PATIENCE, Mode::Fail);
    let failed = readers.get().await.map(drop);
    assert!(matches!(failed, Err(Error::Open { .. })), "{failed:?}");
    thread_ended(&exits).await;
    assert_eq!(
        readers.status().size,
        0,
        "a failed open keeps no place in the pool"
    );
    assert_eq!(read_idle(&readers), None, "nor on the idle path");
    gate.set(Mode::Open);
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!(read_idle_once_free(&readers).await, 42);
    assert_eq!((readers.status().size, gate.asked()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_waits_for_a_reader_that_opens_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, _exits) = readers(dir.path(), PATIENCE, Mode::Hold);
    let readers = Arc::new(readers);
    let waiting = tokio::spawn({
        let readers = Arc::clone(&readers);
        async move { read_checked_out(&readers).await }
    });
    gate.until_held(1).await;
    assert!(
        !waiting.is_finished(),
        "a checkout finished without its reader"
    );
    assert_eq!(
        read_idle(&readers),
        None,
        "a reader still opening is not idle"
    );
    gate.set(Mode::Open);
    assert_eq!(waiting.await.unwrap(), 42);
    assert_eq!(read_idle_once_free(&readers).await, 42);
    assert_eq!(
        gate.asked(),
        1,
        "the slow reader was kept, not opened twice"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_reader_that_never_opens_times_its_checkout_out_and_ends_once_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(100);
    let (readers, gate, exits) = readers(dir.path(), timeout, Mode::Hold);
    let gave_up = readers.get().await.map(drop);
    assert!(
        matches!(gave_up, Err(Error::Timeout { role: Role::Reader, waited }) if waited == timeout),
        "{gave_up:?}"
    );
    gate.until_held(1).await;
    assert_eq!(readers.status().size, 0, "an abandoned open keeps no place");
    // Let the stuck open finish: nobody waits for it any more, so its thread closes the
    // connection and ends, and the reader never joins the pool or the idle path.
    gate.set(Mode::Open);
    thread_ended(&exits).await;
    assert_eq!(read_idle(&readers), None);
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!((readers.status().size, gate.asked()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_whose_thread_ended_is_replaced_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, exits) = readers(dir.path(), PATIENCE, Mode::Open);
    let dead = readers.get().await.unwrap();
    dead.stop();
    thread_ended(&exits).await;
    assert!(!dead.is_alive());
    drop(dead);
    // The pool must not hand out the dead reader, and the idle path must forget it.
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!(gate.asked(), 2, "the dead reader was replaced");
    assert_eq!(
        read_idle_once_free(&readers).await,
        42,
        "the idle path found only the dead reader"
    );
    assert_eq!(readers.status().size, 1);
}
