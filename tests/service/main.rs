//! The example service (`examples/axum_service`) tested as one: its binary started as a child
//! process on a loopback port, driven by a real HTTP client. Concurrent reads and writes, a
//! client that disconnects during a slow query, and SIGTERM under load.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;

mod robustness;

/// The longest any bounded wait here may take: far beyond what the work needs on a loaded
/// machine, short enough that a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(120);

/// A running service; killed if the test fails before stopping it.
struct Service {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
    _stdout: BufReader<ChildStdout>,
}

impl Service {
    /// Starts the service on `127.0.0.1:0` over a new database in a temp dir, with `query`
    /// appended to its URL and its test-only routes, and waits for the address it prints.
    fn start(query: &str) -> Service {
        Service::start_with(query, &[("DEBUG_ROUTES", "1")])
    }

    /// [`start`](Self::start) with `env` in place of the test-only routes.
    fn start_with(query: &str, env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?{query}", dir.path().join("app.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_axum_service"))
            .env("DATABASE_URL", url)
            .env_remove("LITEMUX_CONFIG")
            .env_remove("DEBUG_ROUTES")
            .env_remove("SHUTDOWN_GRACE_MS")
            .envs(env.iter().copied())
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the service");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the address");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Service {
            child,
            base,
            dir,
            _stdout: stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port`, for a raw socket.
    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Waits at most `deadline` for the process to exit, off the runtime's threads; `None`
    /// if it is still running.
    async fn wait_for_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    /// Sends SIGTERM (through `kill(1)`: no `unsafe` needed for one signal).
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, off the runtime's threads.
    async fn wait(mut self) -> (ExitStatus, tempfile::TempDir) {
        let mut child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        let status =
            tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || child.wait()))
                .await
                .expect("the service exits after SIGTERM")
                .expect("join")
                .expect("wait");
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("temp dir");
        (status, std::mem::replace(&mut self.dir, dir))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("HTTP client")
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// A sign-up's outcome: `Ok((status, body))`, or `Err` when the request never got an answer.
async fn sign_up(
    client: &reqwest::Client,
    base: &str,
    name: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let response = client
        .post(format!("{base}/signup"))
        .json(&serde_json::json!({
            "name": name,
            "email": format!("{name}@example.com"),
            "title": format!("first post of {name}"),
        }))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

fn ids(body: &Value) -> (i64, i64) {
    (
        body["user_id"].as_i64().expect("user_id"),
        body["post_id"].as_i64().expect("post_id"),
    )
}

/// Every post, page by page.
async fn all_posts(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut posts = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) =
            get_json(client, &format!("{base}/posts?after={after}&limit=100")).await;
        assert_eq!(status, 200, "{page}");
        posts.extend(page["posts"].as_array().expect("posts").iter().cloned());
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return posts,
        }
        assert!(posts.len() < 1_000_000, "pagination does not end");
    }
}

/// Checks, in the database file itself, that every acknowledged sign-up is there whole.
async fn assert_all_present(db_path: &Path, acked: &[(String, i64, i64)]) {
    let db = litemux::Database::open(&db_path.display().to_string())
        .await
        .expect("open after the service");
    for (name, user_id, post_id) in acked {
        let row = db
            .fetch_one(
                "SELECT u.name, p.title FROM users u JOIN posts p ON p.user_id = u.id \
                 WHERE u.id = ? AND p.id = ?",
                (*user_id, *post_id),
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged sign-up of {name} lost: {e}"));
        assert_eq!(row.get::<String>(0).expect("name"), *name);
        assert_eq!(
            row.get::<String>(1).expect("title"),
            format!("first post of {name}")
        );
    }
    db.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_writes_no_5xx_every_write_present() {
    let service = Service::start("readers=4");
    let base = service.base.clone();
    let tasks = 16;
    let per_task = 25;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let base = base.clone();
        handles.push(tokio::spawn(async move {
            let client = client();
            let mut acked = Vec::new();
            for i in 0..per_task {
                let name = format!("u{t}x{i}");
                let (status, body) = sign_up(&client, &base, &name).await.expect("answered");
                assert_eq!(status, 201, "sign-up of {name}: {body}");
                let (user_id, post_id) = ids(&body);
                acked.push((name, user_id, post_id));
                // Reads beside the writes: a page of posts and the user just written.
                let (status, page) =
                    get_json(&client, &format!("{base}/posts?after={}&limit=10", i * 3)).await;
                assert_eq!(status, 200, "{page}");
                let (status, user) = get_json(&client, &format!("{base}/users/{user_id}")).await;
                assert_eq!(status, 200, "{user}");
                assert_eq!(user["posts"], 1, "{user}");
                // A duplicate e-mail is refused whole (409), not half-written.
                if i == 0 {
                    let (status, body) = sign_up(&client, &base, &format!("u{t}x0"))
                        .await
                        .expect("answered");
                    assert_eq!(status, 409, "{body}");
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for handle in handles {
        acked.extend(handle.await.expect("client task"));
    }
    assert_eq!(acked.len(), tasks * per_task);

    let client = client();
    let posts = all_posts(&client, &base).await;
    assert_eq!(posts.len(), acked.len(), "one post per sign-up, no more");
    let served: std::collections::HashSet<i64> = posts
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect();
    for (name, _, post_id) in &acked {
        assert!(served.contains(post_id), "post of {name} not listed");
    }
    let (status, health) = get_json(&client, &service.url("/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["reader_writes"], 0, "{health}");
    assert_eq!(health["closed"], false, "{health}");

    let db_path = service.db_path();
    service.terminate();
    let (status, dir) = service.wait().await;
    assert!(status.success(), "service exit: {status}");
    assert_all_present(&db_path, &acked).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_query() {
    let service = Service::start("readers=2");
    let client = client();
    let (status, before) = get_json(&client, &service.url("/health")).await;
    assert_eq!(status, 200, "{before}");

    // 10^12 rows: hours of work, so only an interrupt can end it within the deadline.
    let slow_url = service.url(&format!(
        "/slow?n={}",
        litemux_examples::axum_service::MAX_SLOW
    ));
    let slow_client = client.clone();
    let request = tokio::spawn(async move { slow_client.get(slow_url).send().await });

    // The query holds a reader while it runs queued: wait until its inline attempt has overrun
    // and a reader is checked out. A checkout alone may be the quick classification that
    // comes first; dropping the request then, before the statement ever ran, leaves nothing
    // in the history to find.
    let started = Instant::now();
    loop {
        let (_, health) = get_json(&client, &service.url("/health")).await;
        let open = health["readers_open"].as_u64().expect("readers_open");
        let idle = health["readers_idle"].as_u64().expect("readers_idle");
        let overran = health["statements"]["inline_overruns"]
            .as_u64()
            .expect("inline_overruns");
        if overran > 0 && open > idle {
            break;
        }
        assert!(!request.is_finished(), "the slow query answered: {health}");
        assert!(started.elapsed() < DEADLINE, "the slow query never started");
        tokio::task::yield_now().await;
    }

    // The client goes away: its connection is closed mid-request.
    request.abort();
    assert!(request.await.expect_err("aborted").is_cancelled());

    // The abort may land just before the statement was queued; either way its reader must be
    // free again within the deadline (a statement left running would hold it for hours), and
    // a statement that did run must have ended interrupted.
    let started = Instant::now();
    loop {
        let (_, health) = get_json(&client, &service.url("/health")).await;
        if health["readers_open"] == health["readers_idle"] {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the slow query still holds its reader after its client left: {health}"
        );
        tokio::task::yield_now().await;
    }
    let (status, history) = get_json(&client, &service.url("/debug/history")).await;
    assert_eq!(status, 200);
    if let Some(entry) = history.as_array().expect("history").iter().find(|e| {
        e["sql"]
            .as_str()
            .is_some_and(|s| s.contains("WITH RECURSIVE"))
    }) {
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("interrupted"), "{entry}");
    }

    // The service goes on serving.
    let (status, body) = sign_up(&client, &service.base, "after")
        .await
        .expect("answered");
    assert_eq!(status, 201, "{body}");
    service.terminate();
    let (status, _dir) = service.wait().await;
    assert!(status.success(), "service exit: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let history_dir = tempfile::tempdir().expect("temp dir");
    let history = history_dir.path().join("history.jsonl");
    let service = Service::start(&format!("readers=2&history_file={}", history.display()));
    let base = service.base.clone();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let mut handles = Vec::new();
    for t in 0..8 {
        let base = base.clone();
        let acked_count = acked_count.clone();
        let enough = enough.clone();
        handles.push(tokio::spawn(async move {
            let client = client();
            let mut acked = Vec::new();
            // Bounded: the service is stopped long before this many.
            for i in 0..100_000 {
                let name = format!("w{t}x{i}");
                match sign_up(&client, &base, &name).await {
                    Ok((status, body)) => {
                        assert_eq!(status, 201, "sign-up of {name}: {body}");
                        let (user_id, post_id) = ids(&body);
                        acked.push((name, user_id, post_id));
                        if acked_count.fetch_add(1, Ordering::SeqCst) + 1 == 40 {
                            enough.notify_one();
                        }
                    }
                    // The service has stopped: no answer means not acknowledged.
                    Err(_) => return acked,
                }
            }
            panic!("the service never stopped");
        }));
    }
    tokio::time::timeout(DEADLINE, enough.notified())
        .await
        .expect("40 sign-ups acknowledged");
    let db_path = service.db_path();
    service.terminate();
    let mut acked = Vec::new();
    for handle in handles {
        acked.extend(handle.await.expect("client task"));
    }
    let (status, dir) = service.wait().await;
    assert!(status.success(), "service exit: {status}");
    assert!(acked.len() >= 40, "{}", acked.len());

    // Closed cleanly: the WAL checkpointed into the database, the history written.
    let wal = db_path.with_file_name("app.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "the WAL was not checkpointed");
    let text = std::fs::read_to_string(&history).expect("history file written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["sql"].as_str().is_some_and(|s| s.starts_with("INSERT"))),
        "history holds the sign-ups"
    );
    assert_all_present(&db_path, &acked).await;
    drop(dir);
}
