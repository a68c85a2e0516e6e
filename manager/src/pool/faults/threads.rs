//! A connection thread, the writer lease and the lock anchor under faults.

use super::*;

/// A writer thread opens like a reader: a failure reaches whoever started it, and a thread
/// whose opener gave up ends as soon as its open returns.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_thread_reports_a_failed_open_and_outlives_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (gate, exited) = Gate::new(Mode::Fail);
    let exits = Arc::new(Mutex::new(exited));
    let open = |gate: &Arc<Gate>| {
        let (gate, options, context) =
            (Arc::clone(gate), Arc::clone(&options), Arc::clone(&context));
        move || gate.pass(&options, &context, Role::Writer)
    };
    let failed = Worker::spawn("writer".into(), Role::Writer, open(&gate)).await;
    assert!(
        matches!(failed, Err(Error::Open { .. })),
        "{:?}",
        failed.map(drop)
    );
    thread_ended(&exits).await;

    gate.set(Mode::Hold);
    let gave_up = crate::timer::timeout(
        Duration::from_millis(50),
        Worker::spawn("writer".into(), Role::Writer, open(&gate)),
    )
    .await;
    assert!(gave_up.is_err(), "opened through a closed gate");
    gate.until_held(1).await;
    gate.set(Mode::Open);
    thread_ended(&exits).await;

    let (worker, thread) = Worker::spawn("writer".into(), Role::Writer, open(&gate))
        .await
        .unwrap();
    assert_eq!(worker.call(read).await.unwrap(), 42);
    worker.stop();
    thread_ended(&exits).await;
    thread.join().unwrap();
    assert_eq!(gate.asked(), 3);
}

/// The lease is FIFO and bounded: with the writer's thread stuck in a slow job, the lease
/// still goes round in order, and a wait past the writer timeout fails typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_lease_stays_fair_and_bounded_while_its_thread_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (worker, _thread) = Worker::spawn("writer".into(), Role::Writer, {
        let context = Arc::clone(&context);
        move || Connection::open(&options, Role::Writer, context)
    })
    .await
    .unwrap();
    let timeout = Duration::from_millis(100);
    let writer = Arc::new(Writer::new(
        worker,
        timeout,
        false,
        Arc::clone(&context.meters),
    ));
    let (gate, _exits) = Gate::new(Mode::Hold);
    let stuck = tokio::spawn({
        let (writer, gate) = (Arc::clone(&writer), Arc::clone(&gate));
        async move {
            writer
                .autocommit(move |conn| {
                    gate.hold();
                    conn.execute("INSERT INTO t VALUES (1)", &[], Record::No)
                })
                .await
        }
    });
    gate.until_held(1).await;
    // The stuck job holds the thread, not the lease: lease holders queue behind it, in order.
    let (order_tx, order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut queued = Vec::new();
    for i in 0..3_i64 {
        let lease = writer.lease().await.unwrap();
        let (writer, order) = (Arc::clone(&writer), order_tx.clone());
        queued.push(tokio::spawn(async move {
            writer
                .queue(lease, move |conn| {
                    order.send(i).unwrap();
                    conn.execute(
                        "INSERT INTO t VALUES (?)",
                        &[crate::Value::Integer(i)],
                        Record::No,
                    )
                })
                .await
        }));
    }
    // A lease held past the writer timeout makes the next wait fail, typed.
    let held = writer.lease().await.unwrap();
    let timed_out = writer.lease().await.map(drop);
    assert!(
        matches!(timed_out, Err(Error::Timeout { role: Role::Writer, waited }) if waited == timeout),
        "{timed_out:?}"
    );
    drop(held);
    gate.set(Mode::Open);
    stuck.await.unwrap().unwrap();
    for job in queued {
        job.await.unwrap().unwrap();
    }
    drop(order_tx);
    let mut order = Vec::new();
    let mut order_rx = order_rx;
    while let Some(i) = order_rx.recv().await {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2]);
    let count = writer
        .autocommit(|conn| conn.fetch("SELECT count(*) FROM t", &[], Limit::First, Record::No))
        .await
        .unwrap();
    assert_eq!(count[0].get::<i64>(0).unwrap(), 5);
}

/// A database dropped without `close` drops its lock anchor: the anchor's thread must end
/// then, not linger on a snapshot it holds for readers nobody will send.
#[tokio::test(flavor = "current_thread")]
async fn a_lock_anchor_dropped_without_closing_ends_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (gate, exited) = Gate::new(Mode::Open);
    let exits = Arc::new(Mutex::new(exited));
    let timing = Timing {
        linger: Duration::from_secs(3600),
        max_idle: None,
        max_age: None,
    };
    let anchor = Anchor::start("anchor".into(), timing, move || {
        gate.pass(&options, &context, Role::Reader)
    })
    .unwrap();
    anchor.touch();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !anchor.is_held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the anchor never held a snapshot"
        );
        tokio::task::yield_now().await;
    }
    drop(anchor);
    thread_ended(&exits).await;
}
