//! The `http` benchmark: one small HTTP service, its routes served by each async contestant
//! in turn, under the same load from a real HTTP client.
//!
//! The service has two routes shaped like the example service's hot ones, but simpler (one
//! query each, where the example's `GET /users/{id}` also counts the user's posts and it has
//! no `POST /posts`): `GET /users/{id}` (one user as JSON) and `POST /posts` (one insert,
//! `201`). Each route calls the contestant's own `point_read` or
//! `insert`, the code the `compare` bench measures, so the only difference between runs is
//! the database layer. The load is `connections` keep-alive HTTP/1.1 connections from
//! `reqwest`, each sending its next request as soon as the last is answered: 90% reads of a
//! random user, 10% inserts. Server and client share the machine (two runtimes of two
//! workers each), the same for every contestant.
//!
//! Every contestant runs in a fresh child process on a fresh copy of the seeded database
//! (see the crate docs for why).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::contestants::{self, AsyncBackend, OpResult};
use crate::data::{self, NewPost, SEED_USERS, ScratchDir, User};
use crate::rng::XorShift;
use crate::stats::Histogram;

/// Marks a child's result line.
const RESULT: &str = "litemux-http-result";

/// Settings of one comparison.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// Unmeasured time before the window.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// Concurrent client connections.
    pub connections: usize,
}

/// What one contestant's run measured.
#[derive(Debug, Clone, Copy)]
struct HttpResult {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

#[derive(Serialize)]
struct UserJson {
    id: i64,
    name: String,
    email: String,
}

#[derive(Deserialize)]
struct PostJson {
    user_id: i64,
    title: String,
    body: String,
}

async fn get_user<B: AsyncBackend>(
    State(backend): State<B>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Json<UserJson>, StatusCode> {
    match backend.point_read(id).await {
        Ok(User { id, name, email }) => Ok(Json(UserJson { id, name, email })),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn add_post<B: AsyncBackend>(
    State(backend): State<B>,
    Json(post): Json<PostJson>,
) -> StatusCode {
    let post = NewPost {
        user_id: post.user_id,
        title: post.title,
        body: post.body,
    };
    match backend.insert(&post).await {
        Ok(()) => StatusCode::CREATED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Serves `B` on `db` and loads it from a client runtime; returns what the client measured.
fn run_backend<B: AsyncBackend>(db: &Path, config: HttpConfig) -> OpResult<HttpResult> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-server")
        .enable_all()
        .build()?;
    let backend = server.block_on(B::open(db))?;
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/users/{id}", get(get_user::<B>))
        .route("/posts", post(add_post::<B>))
        .with_state(backend.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-client")
        .enable_all()
        .build()?;
    let result = client.block_on(load(address, config));
    let _ = stop.send(());
    server.block_on(serving)??;
    server.block_on(backend.close())?;
    result
}

/// Drives `config.connections` clients against `address` and measures the window.
async fn load(address: SocketAddr, config: HttpConfig) -> OpResult<HttpResult> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(config.connections)
        .build()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..config.connections)
        .map(|i| {
            let http = http.clone();
            let (measuring, done) = (Arc::clone(&measuring), Arc::clone(&done));
            tokio::spawn(async move {
                let mut rng = XorShift::new(i as u64 + 1);
                let mut latencies = Histogram::default();
                let mut errors = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = if rng.below(10) == 0 {
                        let post = NewPost::random(&mut rng);
                        let body = format!(
                            r#"{{"user_id":{},"title":"{}","body":"{}"}}"#,
                            post.user_id, post.title, post.body
                        );
                        http.post(format!("http://{address}/posts"))
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED)
                    } else {
                        let id = 1 + rng.below(SEED_USERS as u64);
                        match http
                            .get(format!("http://{address}/users/{id}"))
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => r
                                .text()
                                .await
                                .is_ok_and(|t| t.contains(&format!("\"id\":{id},"))),
                            _ => false,
                        }
                    };
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            latencies.record(started.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(config.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(config.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut all = Histogram::default();
    let mut errors = 0;
    for task in tasks {
        let (latencies, task_errors) = task.await?;
        all.merge(&latencies);
        errors += task_errors;
    }
    Ok(HttpResult {
        requests_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all.quantile(0.5),
        p99: all.quantile(0.99),
        errors,
    })
}

/// The contestants this bench serves, by name.
pub const CONTESTANTS: &[&str] = &[
    "diesel_async_wrapper",
    "sqlx",
    #[cfg(feature = "litemux")]
    "litemux",
    #[cfg(feature = "litemux")]
    "litemux_diesel",
];

fn run_named(name: &str, db: &Path, config: HttpConfig) -> OpResult<HttpResult> {
    match name {
        "diesel_async_wrapper" => {
            run_backend::<contestants::diesel_async_wrapper::DieselAsyncWrapper>(db, config)
        }
        "sqlx" => run_backend::<contestants::sqlx_pool::Sqlx>(db, config),
        #[cfg(feature = "litemux")]
        "litemux" => run_backend::<contestants::litemux_core::Litemux>(db, config),
        #[cfg(feature = "litemux")]
        "litemux_diesel" => run_backend::<contestants::litemux_diesel::LitemuxDiesel>(db, config),
        other => Err(format!("unknown contestant {other}").into()),
    }
}

/// The child's side: runs `name` on `db` and prints the result line.
pub fn child(args: &[String]) -> OpResult {
    let [name, db, warmup, measure, connections] = args else {
        return Err("--child takes 5 arguments".into());
    };
    let config = HttpConfig {
        warmup: Duration::from_millis(warmup.parse()?),
        measure: Duration::from_millis(measure.parse()?),
        connections: connections.parse()?,
    };
    let r = run_named(name, Path::new(db), config)?;
    println!(
        "{RESULT} {} {} {} {}",
        r.requests_per_sec,
        r.p50.as_nanos(),
        r.p99.as_nanos(),
        r.errors
    );
    Ok(())
}

fn run_in_child(name: &str, db: &Path, config: HttpConfig) -> OpResult<HttpResult> {
    let output = Command::new(std::env::current_exe()?)
        .args([
            "--child".to_owned(),
            name.to_owned(),
            db.display().to_string(),
            config.warmup.as_millis().to_string(),
            config.measure.as_millis().to_string(),
            config.connections.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(RESULT))
        .ok_or_else(|| format!("child {name} failed ({}): {stdout}", output.status))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [rps, p50, p99, errors] = fields[..] else {
        return Err(format!("bad result line: {line}").into());
    };
    Ok(HttpResult {
        requests_per_sec: rps.parse()?,
        p50: Duration::from_nanos(p50.parse()?),
        p99: Duration::from_nanos(p99.parse()?),
        errors: errors.parse()?,
    })
}

/// Runs every contestant in `names`, `rounds` times interleaved, and prints the table: the
/// median round's requests per second and latencies, and its ratio to `litemux_diesel`'s
/// round beside it (the example service's layer) where that contestant ran.
pub fn compare(names: &[String], config: HttpConfig, rounds: usize) -> OpResult {
    let scratch = ScratchDir::new()?;
    let template: PathBuf = scratch.path().join("template.db");
    data::create_template(&template)?;
    let mut results: Vec<Vec<HttpResult>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            let db = scratch.path().join(format!("{name}.db"));
            data::fresh_copy(&template, &db)?;
            eprint!("[round {}/{rounds}] {name} ... ", round + 1);
            let result = run_in_child(name, &db, config)?;
            eprintln!("{:.0} req/s", result.requests_per_sec);
            data::remove_database(&db);
            results[i].push(result);
        }
    }
    let median = |rs: &[HttpResult]| {
        let mut sorted = rs.to_vec();
        sorted.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
        sorted[sorted.len() / 2]
    };
    let reference = names.iter().position(|n| n == "litemux_diesel");
    println!(
        "litemux-bench http: {} connection(s), 90% GET /users/{{id}}, 10% POST /posts, {rounds} round(s) of {:?} warm-up + {:?} measured, {} cores\n",
        config.connections,
        config.warmup,
        config.measure,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>18} {:>7}",
        "contestant", "req/s", "p50", "p99", "vs litemux_diesel", "errors"
    );
    for (i, name) in names.iter().enumerate() {
        let m = median(&results[i]);
        let ratio = reference.map_or_else(
            || "-".to_owned(),
            |r| {
                let mut ratios: Vec<f64> = results[i]
                    .iter()
                    .zip(&results[r])
                    .map(|(a, b)| a.requests_per_sec / b.requests_per_sec)
                    .collect();
                ratios.sort_by(f64::total_cmp);
                format!("{:.2}x", ratios[ratios.len() / 2])
            },
        );
        let errors: u64 = results[i].iter().map(|r| r.errors).sum();
        println!(
            "{name:<22} {:>10.0} {:>10.1?} {:>10.1?} {ratio:>18} {errors:>7}",
            m.requests_per_sec, m.p50, m.p99
        );
    }
    Ok(())
}
