//! Runs in a child process: every measured run, and with it the peak memory figure.
//!
//! The runner re-executes this binary with [`ChildSpec::to_args`]; the child runs one
//! contestant on one workload and prints one result line that includes its own peak resident
//! set (`VmHWM`) and its resident set before the contestant opened anything (`VmRSS`), both
//! read from `/proc/self/status`. A fresh process per run means no contestant's memory,
//! threads or allocator state carries over into another's figure.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::cli::ChildSpec;
use crate::contestants;
use crate::stats::Measurement;

/// Marks the result line among anything else a child might print.
const RESULT_PREFIX: &str = "litemux-bench-result";

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`); `None` where there is no procfs.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Runs `spec` in a child process and returns what it measured.
pub fn run_in_child(spec: &ChildSpec) -> Result<Measurement, String> {
    let exe =
        std::env::current_exe().map_err(|error| format!("cannot find own binary: {error}"))?;
    let output = Command::new(exe)
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot start child: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .find_map(|line| line.strip_prefix(RESULT_PREFIX))
    {
        Some(line) => decode(line),
        None => Err(format!("child gave no result ({})", output.status)),
    }
}

/// The body of a child process: run, then print the result line.
pub fn child_main(spec: &ChildSpec) -> ExitCode {
    let start_rss_kib = status_kib("VmRSS");
    let Some(contestant) = contestants::all()
        .into_iter()
        .find(|contestant| contestant.name() == spec.contestant)
    else {
        eprintln!("unknown contestant {}", spec.contestant);
        return ExitCode::FAILURE;
    };
    let result = contestant.run(&spec.run).map(|mut measurement| {
        measurement.start_rss_kib = start_rss_kib;
        measurement.peak_rss_kib = status_kib("VmHWM");
        measurement
    });
    println!("{RESULT_PREFIX}{}", encode(&result));
    ExitCode::SUCCESS
}

/// One line: tab-separated numbers in a fixed order, then the first error's message.
fn encode(result: &Result<Measurement, String>) -> String {
    match result {
        Err(error) => format!("\tfailed\t{}", one_line(error)),
        Ok(m) => {
            let optional = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
            format!(
                "\tok\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                m.ops,
                m.errors,
                m.elapsed.as_nanos(),
                m.p50.as_nanos(),
                m.p99.as_nanos(),
                optional(m.peak_rss_kib),
                optional(m.start_rss_kib),
                m.first_error.as_deref().map(one_line).unwrap_or_default(),
            )
        }
    }
}

fn decode(line: &str) -> Result<Measurement, String> {
    let fields: Vec<&str> = line.splitn(10, '\t').collect();
    match fields.as_slice() {
        ["", "failed", error] => Err(error.to_string()),
        ["", "ok", ops, errors, elapsed, p50, p99, peak, start, error] => {
            let number = |text: &str| {
                text.parse::<u64>()
                    .map_err(|_| format!("bad number {text:?} in child result"))
            };
            let nanos = |text: &str| number(text).map(Duration::from_nanos);
            Ok(Measurement {
                ops: number(ops)?,
                errors: number(errors)?,
                elapsed: nanos(elapsed)?,
                p50: nanos(p50)?,
                p99: nanos(p99)?,
                peak_rss_kib: number(peak).ok(),
                start_rss_kib: number(start).ok(),
                first_error: (!error.is_empty()).then(|| error.to_string()),
            })
        }
        _ => Err(format!("malformed child result {line:?}")),
    }
}

/// Keeps a message on one line and free of the field separator.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        let measurement = Measurement {
            ops: 12,
            errors: 3,
            elapsed: Duration::from_millis(1500),
            p50: Duration::from_micros(4),
            p99: Duration::from_micros(90),
            first_error: Some("database is locked\n(code 5)".into()),
            peak_rss_kib: Some(20_000),
            start_rss_kib: None,
        };
        let back = decode(&encode(&Ok(measurement.clone()))).unwrap();
        assert_eq!(
            back.first_error.as_deref(),
            Some("database is locked (code 5)")
        );
        assert_eq!(back.ops, 12);
        assert_eq!(back.p99, measurement.p99);
        assert_eq!(back.peak_rss_kib, Some(20_000));
        assert_eq!(back.start_rss_kib, None);
        assert_eq!(decode(&encode(&Err("boom".into()))), Err("boom".into()));
    }

    #[test]
    fn reads_own_status() {
        if cfg!(target_os = "linux") {
            assert!(status_kib("VmHWM").unwrap() > 0);
        }
    }
}
