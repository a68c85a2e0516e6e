//! `cargo bench -p litemux-bench --bench http [-- OPTIONS]`: the same HTTP service over each
//! async contestant, under the same load (see `litemux_bench::http`).
//!
//! Options: `--warmup SECS` (default 1), `--measure SECS` (default 5), `--connections N`
//! (default 64), `--rounds N` (default 3), `--contestants A,B,...`.

use std::process::ExitCode;
use std::time::Duration;

use litemux_bench::http::{self, HttpConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return match http::child(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match parse(&args).and_then(|(names, config, rounds)| http::compare(&names, config, rounds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type Parsed = (Vec<String>, HttpConfig, usize);

fn parse(args: &[String]) -> Result<Parsed, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = HttpConfig {
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(5),
        connections: 64,
    };
    let mut rounds = 3;
    let mut names: Vec<String> = http::CONTESTANTS.iter().map(|&n| n.to_owned()).collect();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {}
            "--warmup" => config.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--measure" => config.measure = Duration::from_secs_f64(value()?.parse()?),
            "--connections" => config.connections = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--contestants" => names = value()?.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if rounds == 0 || config.connections == 0 {
        return Err("--rounds and --connections must be at least 1".into());
    }
    Ok((names, config, rounds))
}
