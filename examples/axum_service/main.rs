//! An HTTP service over litemux-diesel (users and posts): see `litemux_examples::axum_service`
//! for its routes and configuration.
//!
//! Run from the repository root:
//! `DATABASE_URL='sqlite://blog.db?readers=4' BIND=127.0.0.1:3000 cargo run --example axum_service`.
//! Logs go to stderr (`RUST_LOG`, default `info`); the bound address goes to stdout.

use std::io::Write as _;
use std::process::ExitCode;

use litemux_examples::axum_service::{Config, init_tracing, open, serve, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum_service: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Config::from_env()?;
    let db = open(config.options).await?;
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    // Tests read this line to find the port when BIND asks for port 0.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    serve(
        listener,
        db,
        config.debug_routes,
        config.shutdown_grace,
        shutdown_signal(),
    )
    .await
}
