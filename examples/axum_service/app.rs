//! A small HTTP service over litemux-diesel: users and posts (the repository's migrations),
//! a transactional sign-up, keyset pagination, `/health` with [`litemux::Status`], per-request
//! tracing spans, graceful shutdown that closes the database.
//!
//! The binary is `examples/axum_service/main.rs` (`cargo run --example axum_service`); the
//! router and the configuration live here so that tests can reuse them.
//!
//! | route | what |
//! |---|---|
//! | `POST /signup` | `{"name", "email"?, "title", "body"?}`: the user and their first post in one transaction; `201` with `{"user_id", "post_id"}`, `409` if the e-mail is taken, `422` on bad input |
//! | `GET /posts?after=ID&limit=N` | posts with `id > after`, oldest first, at most `limit` (1..=100, default 20), and `next` (the `after` of the next page, or `null`) |
//! | `GET /users/{id}` | one user and their post count, `404` if there is none |
//! | `GET /health` | [`litemux::Status`] as JSON; `503` once the database is closed |
//! | `GET /slow?n=N` | **test-only**, mounted only with `DEBUG_ROUTES=1`: a recursive CTE counting to `N` (up to 10^12: hours); used to show that a client that disconnects stops its statement |
//! | `GET /debug/history` | **test-only**, mounted only with `DEBUG_ROUTES=1`: the last statements of the query history (`sql`, `role`, `error`) |
//!
//! Every failure is a JSON body `{"error": "..."}`: `422` for a request that cannot be read
//! (a body, query or path that does not parse), `503` while the database is busy (another
//! process holds its lock, or no connection came free in time) or closed, `500` otherwise.
//!
//! Configuration (read by [`Config::from_env`]): `LITEMUX_CONFIG` names a TOML file holding
//! [`litemux::Options`] (the URL's keys plus `path`); else `DATABASE_URL` is a litemux URL;
//! else `sqlite://axum_service.db`. `BIND` is the listening address (default
//! `127.0.0.1:3000`; port 0 picks a free one). `DEBUG_ROUTES=1` mounts the test-only routes.
//! The bound address is printed on stdout as `listening on http://ADDR`. On SIGTERM or
//! ctrl-c the service stops accepting, gives requests in flight [`SHUTDOWN_GRACE`] to finish,
//! then closes the database.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diesel::prelude::{Insertable, Queryable, QueryableByName, Selectable};
use diesel::result::Error as DieselError;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use litemux::{Database, Options};
use litemux_diesel::{LitemuxConnection, LoadDecoded as _};
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;

mod error;

use error::AppError;

mod schema {
    include!("../../migrations/schema.rs");
}
use schema::{posts, users};

/// The longest name, e-mail, title or body accepted, in bytes.
pub const MAX_TEXT: usize = 10_000;
/// The most posts one page holds.
pub const MAX_PAGE: i64 = 100;
/// The largest `n` `/slow` counts to.
pub const MAX_SLOW: i64 = 1_000_000_000_000;

/// Where the service keeps its data and where it listens.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database to open.
    pub options: Options,
    /// The address to listen on.
    pub bind: SocketAddr,
    /// Whether the test-only routes (`/slow`, `/debug/history`) are mounted.
    pub debug_routes: bool,
    /// How long requests in flight may take to finish once shutdown begins.
    pub shutdown_grace: std::time::Duration,
}

impl Config {
    /// Reads `LITEMUX_CONFIG` (a TOML file of [`Options`]) or `DATABASE_URL`, and `BIND`.
    ///
    /// # Errors
    /// A message naming the variable whose value is unusable.
    pub fn from_env() -> Result<Config, String> {
        let options = if let Some(path) = std::env::var_os("LITEMUX_CONFIG") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("LITEMUX_CONFIG {}: {e}", path.display()))?;
            toml::from_str::<Options>(&text)
                .map_err(|e| format!("LITEMUX_CONFIG {}: {e}", path.display()))?
        } else {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "sqlite://axum_service.db".to_owned());
            url.parse::<Options>()
                .map_err(|e| format!("DATABASE_URL: {e}"))?
        };
        let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
        let bind = bind
            .parse()
            .map_err(|e| format!("BIND `{bind}` is not an address: {e}"))?;
        let debug_routes = std::env::var("DEBUG_ROUTES").is_ok_and(|v| v == "1");
        let shutdown_grace = match std::env::var("SHUTDOWN_GRACE_MS") {
            Ok(ms) => std::time::Duration::from_millis(
                ms.parse()
                    .map_err(|e| format!("SHUTDOWN_GRACE_MS `{ms}`: {e}"))?,
            ),
            Err(_) => SHUTDOWN_GRACE,
        };
        Ok(Config {
            options,
            bind,
            debug_routes,
            shutdown_grace,
        })
    }
}

/// What every handler shares: the database handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
}

impl AppState {
    /// A diesel connection for one request: a handle on the shared writer and readers, so
    /// there is nothing to pool.
    fn conn(&self) -> LitemuxConnection {
        LitemuxConnection::from_database(self.db.clone())
    }
}

/// Opens the database and applies pending migrations.
///
/// # Errors
/// Opening failed, or a migration did.
///
/// # Cancel safety
/// Not cancel safe: a migration may be left half-applied (each runs in its own transaction,
/// so none is half-applied, but later ones are not run).
pub async fn open(options: Options) -> Result<Database, Box<dyn std::error::Error + Send + Sync>> {
    let db = Database::open_with(options).await?;
    litemux_diesel::run_pending_migrations(&db, crate::MIGRATIONS).await?;
    Ok(db)
}

/// The service's routes (with the test-only ones if `debug_routes`), with a tracing span per
/// request (`tower-http`'s `TraceLayer`): the statements' spans and history events of a
/// request are recorded beneath its span.
pub fn router(db: Database, debug_routes: bool) -> Router {
    let mut routes = Router::new()
        .route("/signup", post(signup))
        .route("/posts", get(list_posts))
        .route("/users/{id}", get(get_user))
        .route("/health", get(health));
    if debug_routes {
        routes = routes
            .route("/slow", get(slow))
            .route("/debug/history", get(history));
    }
    routes
        .layer(TraceLayer::new_for_http())
        .with_state(AppState { db })
}

/// How long requests in flight may take to finish once shutdown begins, unless
/// `SHUTDOWN_GRACE_MS` says otherwise; past it their connections are dropped (a client that
/// never finishes sending a request would otherwise hold the shutdown for ever) and the
/// database is closed.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router(db, debug_routes)` on `listener` until `shutdown` completes, lets requests
/// in flight finish (for up to `grace`), then closes the database (waits for its transactions, checkpoints the WAL and
/// writes the history file if one is configured).
///
/// # Errors
/// Accepting failed, or closing the database did.
///
/// # Cancel safety
/// Not cancel safe: dropped, the database is not closed (dropping its last handle then ends
/// its threads without the checkpoint).
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Database,
    debug_routes: bool,
    grace: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (begun_tx, begun) = tokio::sync::oneshot::channel::<()>();
    let signalled = async move {
        shutdown.await;
        let _ = begun_tx.send(());
    };
    let server = axum::serve(listener, router(db.clone(), debug_routes))
        .with_graceful_shutdown(signalled)
        .into_future();
    tokio::pin!(server);
    let grace_over = async {
        // Never ends if the server ends first (the sender is then gone unsent).
        if begun.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = &mut server => {
            served?;
            tracing::info!("requests drained; closing the database");
        }
        () = grace_over => {
            tracing::warn!(?grace, "requests still in flight after the grace; dropping them");
        }
    }
    db.close().await?;
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`; `debug` shows each request's span
/// with its statements beneath it).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// The body of `POST /signup`.
#[derive(Debug, Deserialize)]
struct SignUp {
    name: String,
    email: Option<String>,
    title: String,
    body: Option<String>,
}

/// The answer to a sign-up.
#[derive(Debug, Serialize)]
struct SignedUp {
    user_id: i32,
    post_id: i32,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    name: &'a str,
    email: Option<&'a str>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = posts)]
struct NewPost<'a> {
    user_id: i32,
    title: &'a str,
    body: &'a str,
}

/// A row of `posts`, as served.
#[derive(Debug, Serialize, Queryable, Selectable)]
#[diesel(table_name = posts, check_for_backend(diesel::sqlite::Sqlite))]
struct Post {
    id: i32,
    user_id: i32,
    title: String,
    body: String,
    published: bool,
}

/// A row of `users`, as served.
#[derive(Debug, Serialize, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
struct User {
    id: i32,
    name: String,
    email: Option<String>,
}

fn check_text(field: &str, value: &str, allow_empty: bool) -> Result<(), AppError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(AppError::Invalid(format!("`{field}` is empty")));
    }
    if value.len() > MAX_TEXT {
        return Err(AppError::Invalid(format!(
            "`{field}` is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

/// The user and their first post, both or neither.
async fn signup(
    State(state): State<AppState>,
    req: Result<Json<SignUp>, JsonRejection>,
) -> Result<(StatusCode, Json<SignedUp>), AppError> {
    let Json(req) = req?;
    check_text("name", &req.name, false)?;
    check_text("title", &req.title, false)?;
    if let Some(email) = &req.email {
        check_text("email", email, false)?;
    }
    let body = req.body.as_deref().unwrap_or("");
    check_text("body", body, true)?;
    let mut conn = state.conn();
    let signed_up = conn
        .transaction::<_, DieselError, _>(async |conn| {
            let user_id: i32 = diesel::insert_into(users::table)
                .values(NewUser {
                    name: &req.name,
                    email: req.email.as_deref(),
                })
                .returning(users::id)
                .get_result(conn)
                .await?;
            let post_id: i32 = diesel::insert_into(posts::table)
                .values(NewPost {
                    user_id,
                    title: &req.title,
                    body,
                })
                .returning(posts::id)
                .get_result(conn)
                .await?;
            Ok(SignedUp { user_id, post_id })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(signed_up)))
}

/// `?after=ID&limit=N`.
#[derive(Debug, Deserialize)]
struct Page {
    after: Option<i32>,
    limit: Option<i64>,
}

/// One page of posts and where the next starts.
#[derive(Debug, Serialize)]
struct PostPage {
    posts: Vec<Post>,
    next: Option<i32>,
}

/// Keyset pagination: stable under concurrent inserts, unlike `OFFSET`.
async fn list_posts(
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<PostPage>, AppError> {
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::Invalid(format!(
            "`limit` must be 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    let mut conn = state.conn();
    // `load_decoded`: a page of rows becomes `Post`s where the reader steps them, with no
    // intermediate row copy (`load` would copy each value out first).
    let posts: Vec<Post> = posts::table
        .filter(posts::id.gt(page.after.unwrap_or(0)))
        .order(posts::id)
        .limit(limit)
        .select(Post::as_select())
        .load_decoded(&mut conn)
        .await?;
    let full = i64::try_from(posts.len()).is_ok_and(|n| n == limit);
    let next = if full {
        posts.last().map(|p| p.id)
    } else {
        None
    };
    Ok(Json(PostPage { posts, next }))
}

/// A user and how many posts they have.
#[derive(Debug, Serialize)]
struct UserView {
    #[serde(flatten)]
    user: User,
    posts: i64,
}

async fn get_user(
    State(state): State<AppState>,
    id: Result<Path<i32>, PathRejection>,
) -> Result<Json<UserView>, AppError> {
    let Path(id) = id?;
    let mut conn = state.conn();
    let user = users::table
        .find(id)
        .select(User::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(AppError::NotFound)?;
    let posts = posts::table
        .filter(posts::user_id.eq(id))
        .count()
        .get_result(&mut conn)
        .await?;
    Ok(Json(UserView { user, posts }))
}

/// [`litemux::Status`] as JSON.
async fn health(State(state): State<AppState>) -> Response {
    let s = state.db.status();
    let body = serde_json::json!({
        "ok": !s.closed,
        "readers_max": s.readers_max,
        "readers_open": s.readers_open,
        "readers_idle": s.readers_idle,
        "writer_queued": s.writer_queued,
        "lock_anchor_held": s.lock_anchor_held,
        "closed": s.closed,
        "reader_writes": s.reader_writes,
        "statements": {
            "reader": s.counters.reader_statements,
            "writer": s.counters.writer_statements,
            "failed": s.counters.failed_statements,
            "slow": s.counters.slow_statements,
            "inline_runs": s.counters.inline_runs,
            "inline_overruns": s.counters.inline_overruns,
            "interrupts": s.counters.interrupts,
        },
    });
    let code = if s.closed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// `?n=N` for `/slow`.
#[derive(Debug, Deserialize)]
struct Slow {
    n: i64,
}

#[derive(Debug, Serialize, QueryableByName)]
struct Counted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    counted: i64,
}

/// Test-only: a real query that runs as long as asked (about 10^7 rows a second here). When
/// the client disconnects, hyper drops this handler's future, and litemux interrupts the
/// statement whose future was dropped: the reader is free again at once.
async fn slow(
    State(state): State<AppState>,
    Query(slow): Query<Slow>,
) -> Result<Json<Counted>, AppError> {
    if !(0..=MAX_SLOW).contains(&slow.n) {
        return Err(AppError::Invalid(format!("`n` must be 0 to {MAX_SLOW}")));
    }
    let mut conn = state.conn();
    let counted = diesel::sql_query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) \
         SELECT count(*) AS counted FROM c",
    )
    .bind::<diesel::sql_types::BigInt, _>(slow.n)
    .get_result::<Counted>(&mut conn)
    .await?;
    Ok(Json(counted))
}

/// One statement of the history, as `/debug/history` serves it.
#[derive(Debug, Serialize)]
struct HistoryView {
    sql: String,
    role: &'static str,
    rows: u64,
    duration_us: u128,
    error: Option<String>,
}

/// Test-only: the query history, oldest first.
async fn history(State(state): State<AppState>) -> Json<Vec<HistoryView>> {
    Json(
        state
            .db
            .history()
            .into_iter()
            .map(|e| HistoryView {
                sql: e.sql,
                role: e.role.as_str(),
                rows: e.rows,
                duration_us: e.duration.as_micros(),
                error: e.error,
            })
            .collect(),
    )
}
