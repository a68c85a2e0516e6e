//! Clients that misbehave, and failures the service must answer well: a half-sent request at
//! shutdown, requests axum cannot read, a write lock held by another process, anonymous
//! requests asking for the test-only routes.

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::{Service, client};

/// How long the service may take to exit after SIGTERM (its shutdown grace is 1 s here).
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A client that sent half a request head and then went quiet (a slow or dead peer, a
/// slowloris) must not keep SIGTERM from stopping the service: the database would never be
/// closed, its WAL never checkpointed, its history never written. The module docs promise
/// "graceful shutdown that closes the database"; axum's graceful shutdown waits for every
/// connection with no deadline, and hyper has no header-read timeout without a timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_even_with_a_half_sent_request() {
    let history_dir = tempfile::tempdir().expect("temp dir");
    let history = history_dir.path().join("history.jsonl");
    let mut service = Service::start_with(
        &format!("readers=2&history_file={}", history.display()),
        &[("SHUTDOWN_GRACE_MS", "1000")],
    );
    // Some work, so there is a WAL to checkpoint and a history to write.
    let response = client()
        .post(service.url("/signup"))
        .json(&serde_json::json!({"name": "ada", "email": "ada@example.com", "title": "hi"}))
        .send()
        .await
        .expect("sign-up");
    assert_eq!(response.status().as_u16(), 201);

    // A peer that sends part of a request head and then nothing.
    let mut slow = std::net::TcpStream::connect(service.addr()).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("send half a head");
    // Make sure the server has read those bytes before the signal: ask it something on
    // another connection (served after the half head was accepted).
    let (status, _) = {
        let r = client()
            .get(service.url("/health"))
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await)
    };
    assert_eq!(status, 200);

    service.terminate();
    let exited = service.wait_for_exit(EXIT_DEADLINE).await;
    let wal = service.db_path().with_file_name("app.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    drop(slow);
    assert!(
        exited.is_some(),
        "still running {EXIT_DEADLINE:?} after SIGTERM, held by one half-sent request \
         (database not closed: WAL {wal_len} bytes, history file written: {})",
        history.exists()
    );
    assert!(exited.unwrap().success());
    assert_eq!(wal_len, 0, "the WAL was not checkpointed");
    assert!(history.exists(), "history file not written");
}

/// The routes table documents `422` on bad sign-up input, and every handled error answers
/// `{"error": ...}`. Requests axum's extractors refuse before a handler runs get neither:
/// a malformed JSON body is `400 text/plain`, an id past `i32` on `/users/{id}` is
/// `400 text/plain` (while an absent user is `404` JSON), a bad `?after=` likewise. A client
/// that reads the documented JSON error body fails to parse these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_answer_with_the_documented_status_and_a_json_error() {
    let service = Service::start("readers=2");
    let client = client();
    let mut problems = Vec::new();
    let mut check = |what: &str, status: u16, expected: &[u16], body: &str| {
        let json: Option<Value> = serde_json::from_str(body).ok();
        let has_error = json.as_ref().is_some_and(|v| v["error"].is_string());
        if !expected.contains(&status) || !has_error {
            problems.push(format!(
                "{what}: {status} {body:?} (expected one of {expected:?} with a JSON `error`)"
            ));
        }
    };

    let r = client
        .post(service.url("/signup"))
        .header("content-type", "application/json")
        .body(r#"{"name": "ada", "title": "#)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    check(
        "malformed sign-up JSON",
        status,
        &[422],
        &r.text().await.unwrap(),
    );

    let r = client
        .post(service.url("/signup"))
        .header("content-type", "application/json")
        .body(r#"{"name": "ada"}"#)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    check(
        "sign-up without a title",
        status,
        &[422],
        &r.text().await.unwrap(),
    );

    let r = client
        .get(service.url("/users/99999999999"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    check(
        "user id past i32",
        status,
        &[404, 422],
        &r.text().await.unwrap(),
    );

    let r = client
        .get(service.url("/posts?after=99999999999"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    check(
        "?after= past i32",
        status,
        &[200, 422],
        &r.text().await.unwrap(),
    );

    // For comparison, what the handlers themselves answer: JSON errors.
    let r = client
        .get(service.url("/users/12345"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.expect("JSON 404");
    assert_eq!(body["error"], "not found");

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A write that cannot get SQLite's write lock within `busy_timeout` (another process holds
/// it: a migration, a backup, the `sqlite3` shell) is a temporary condition, and litemux
/// reports it as a typed `Error::Busy` so callers can tell it apart
/// (`litemux_diesel::litemux_error`, as the README shows). The service maps only
/// `Error::Closed` to 503 and answers this with a 500, logging it as a failure of the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_is_503_not_500() {
    let service = Service::start("readers=2&busy_timeout=200");
    // Another process's writer on the same file: this test process, through litemux.
    let other = litemux::Database::open(&service.db_path().display().to_string())
        .await
        .expect("open the service's file");
    let tx = other.begin().await.expect("BEGIN IMMEDIATE elsewhere");
    let r = client()
        .post(service.url("/signup"))
        .json(&serde_json::json!({"name": "ada", "email": "ada@example.com", "title": "hi"}))
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    tx.rollback().await.expect("rollback");
    other.close().await.expect("close");
    assert_eq!(
        status, 503,
        "sign-up while the write lock is held elsewhere: {body}"
    );
}

/// `/slow` is documented as "test-only", yet `router()` mounts it unconditionally, so the
/// example binary serves it to anyone: with `readers=2`, two anonymous `GET /slow?n=10^12`
/// hold both readers for hours, and every read of the service (`GET /users/{id}`) queues
/// behind them until `reader_timeout` (30 s) and then fails with a 500. (`/debug/history`,
/// "test-only" too, likewise serves the SQL and error text of recent statements to anyone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_cannot_hold_every_reader() {
    let service = Service::start_with("readers=2", &[]);
    let client = client();
    let r = client
        .post(service.url("/signup"))
        .json(&serde_json::json!({"name": "ada", "title": "hi"}))
        .send()
        .await
        .expect("sign-up");
    assert_eq!(r.status().as_u16(), 201);
    let user_id = r.json::<Value>().await.unwrap()["user_id"]
        .as_i64()
        .unwrap();

    let slow_url = service.url(&format!(
        "/slow?n={}",
        litemux_examples::axum_service::MAX_SLOW
    ));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), slow_url.clone());
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    // Until both readers are taken (bounded by the client's own timeout on each poll).
    let started = std::time::Instant::now();
    loop {
        let health: Value = client
            .get(service.url("/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("JSON");
        if health["readers_idle"] == 0 && health["readers_open"] == 2 {
            break;
        }
        if slow.iter().any(tokio::task::JoinHandle::is_finished) {
            break; // the route refused or finished: nothing holds the readers
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{health}");
        tokio::task::yield_now().await;
    }

    let read = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(service.url(&format!("/users/{user_id}"))).send(),
    )
    .await;
    for task in &slow {
        task.abort();
    }
    let status = match read {
        Ok(Ok(r)) => Some(r.status().as_u16()),
        _ => None,
    };
    assert_eq!(
        status,
        Some(200),
        "GET /users/{user_id} got no answer within 10 s while two anonymous /slow requests \
         ran"
    );
}
