//! Command-line arguments of the `compare` binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::contestants::BatchMode;
use crate::driver::{Plan, RunSpec};
use crate::workload::Workload;

/// Help text.
pub const USAGE: &str = "\
usage: cargo bench -p litemux-bench --bench compare [-- OPTIONS]

options:
  --quick                  short mode: one round of 0.5 s warm-up + 1.5 s measured
                           (full mode, the default: 3 rounds of 1 s + 3 s)
  --rounds N               run every contestant N times per workload, the rounds
                           interleaved; the report shows the median round
  --only SUBSTR[,SUBSTR]   run only the workloads whose name contains one of these
  --contestants A[,B...]   run only these contestants (ratios need diesel_sync among them)
  --warmup SECS            override the warm-up of every run
  --measure SECS           override the measured window of every run
  --tasks N                run the concurrent workloads (many tasks of one role) with N
                           tasks instead, to see how each contestant scales
  --in-process             run every contestant in this process instead of a fresh child
                           per run (for profilers; SQLite is then set up by litemux
                           first, as in a program using litemux, for every contestant)
  --list                   print the workloads and contestants, then exit
  -h, --help               print this text";

/// Run lengths of full mode, each of [`FULL_ROUNDS`] rounds.
const FULL: Plan = Plan {
    warmup: Duration::from_secs(1),
    measure: Duration::from_secs(3),
};

/// Rounds of full mode. This machine's speed moves by up to 2x over tens of seconds;
/// interleaved rounds let a slow spell hit every contestant's round alike, and the median
/// round ignores one spell.
const FULL_ROUNDS: usize = 3;

/// Run lengths of `--quick`.
const QUICK: Plan = Plan {
    warmup: Duration::from_millis(500),
    measure: Duration::from_millis(1500),
};

/// The argument that starts a child run; see [`ChildSpec::to_args`].
const CHILD_FLAG: &str = "--child";

/// What the binary was asked to do.
#[derive(Debug)]
pub enum Command {
    /// The comparison.
    Compare(Config),
    /// One run inside a child process (used by the runner itself, not by people).
    Child(ChildSpec),
    /// List workloads and contestants.
    List,
    /// Print [`USAGE`].
    Help,
}

/// Settings of a comparison.
#[derive(Debug, Clone)]
pub struct Config {
    /// Run lengths.
    pub plan: Plan,
    /// `"quick"`, `"full"` or `"custom"`, for the report's heading.
    pub mode: &'static str,
    /// Workload name substrings; empty means all.
    pub only: Vec<String>,
    /// Contestant names; `None` means all.
    pub contestants: Option<Vec<String>>,
    /// `--tasks`: see [`RunSpec::tasks`].
    pub tasks: Option<usize>,
    /// Runs of every contestant per workload, interleaved (at least 1).
    pub rounds: usize,
    /// `--in-process`: no child processes (peak memory is then not reported).
    pub in_process: bool,
}

/// One run to do in a child process.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Which contestant.
    pub contestant: String,
    /// What to run.
    pub run: RunSpec,
}

impl ChildSpec {
    /// The arguments that make a child process run this spec.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            CHILD_FLAG.to_owned(),
            self.run.workload.name().to_owned(),
            self.contestant.clone(),
            self.run.batch_mode.name().to_owned(),
            self.run.db.display().to_string(),
            self.run.plan.warmup.as_millis().to_string(),
            self.run.plan.measure.as_millis().to_string(),
            self.run
                .tasks
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ]
    }

    fn from_args(args: &[String]) -> Result<Self, String> {
        let [workload, contestant, mode, db, warmup, measure, tasks] = args else {
            return Err(format!(
                "{CHILD_FLAG} takes 7 arguments, got {}",
                args.len()
            ));
        };
        let millis = |text: &String| {
            text.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("bad milliseconds: {text}"))
        };
        Ok(ChildSpec {
            contestant: contestant.clone(),
            run: RunSpec {
                workload: Workload::from_name(workload)
                    .ok_or_else(|| format!("unknown workload {workload}"))?,
                db: PathBuf::from(db),
                plan: Plan {
                    warmup: millis(warmup)?,
                    measure: millis(measure)?,
                },
                batch_mode: BatchMode::from_name(mode)
                    .ok_or_else(|| format!("unknown batch mode {mode}"))?,
                tasks: match tasks.as_str() {
                    "-" => None,
                    n => Some(count(n, "task count")?),
                },
            },
        })
    }
}

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Command, String> {
        if args.first().map(String::as_str) == Some(CHILD_FLAG) {
            return ChildSpec::from_args(&args[1..]).map(Command::Child);
        }
        let mut config = Config {
            plan: FULL,
            mode: "full",
            only: Vec::new(),
            contestants: None,
            tasks: None,
            rounds: FULL_ROUNDS,
            in_process: false,
        };
        let mut rounds = None;
        let (mut warmup, mut measure) = (None, None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => {
                    config.plan = QUICK;
                    config.mode = "quick";
                    config.rounds = 1;
                }
                "--rounds" => rounds = Some(count(value()?, "round count")?),
                "--only" => config.only.extend(split_list(value()?)),
                "--contestants" => config
                    .contestants
                    .get_or_insert_with(Vec::new)
                    .extend(split_list(value()?)),
                "--warmup" => warmup = Some(seconds(value()?)?),
                "--measure" => measure = Some(seconds(value()?)?),
                "--tasks" => config.tasks = Some(count(value()?, "task count")?),
                "--in-process" => config.in_process = true,
                "--list" => return Ok(Command::List),
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        config.rounds = rounds.unwrap_or(config.rounds);
        if warmup.is_some() || measure.is_some() {
            config.plan.warmup = warmup.unwrap_or(config.plan.warmup);
            config.plan.measure = measure.unwrap_or(config.plan.measure);
            config.mode = "custom";
        }
        Ok(Command::Compare(config))
    }
}

fn split_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
}

/// A count of at least one; `what` names it in the error.
fn count(value: &str, what: &str) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad {what}: {value}"))
}

fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("bad number of seconds: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        Command::parse(&args)
    }

    #[test]
    fn filters_and_modes() {
        let Ok(Command::Compare(config)) = parse(&[
            "--quick",
            "--only",
            "c64,scan",
            "--contestants",
            "diesel_sync,sqlx",
            "--bench",
        ]) else {
            panic!("expected a comparison");
        };
        assert_eq!(config.plan, QUICK);
        assert_eq!(config.rounds, 1);
        assert_eq!(config.only, ["c64", "scan"]);
        assert_eq!(config.contestants.unwrap(), ["diesel_sync", "sqlx"]);
        assert_eq!(config.tasks, None);
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--only"]).is_err());
        assert!(parse(&["--tasks", "0"]).is_err());
        let Ok(Command::Compare(config)) = parse(&["--tasks", "8"]) else {
            panic!("expected a comparison");
        };
        assert_eq!(config.tasks, Some(8));
        assert_eq!(config.rounds, FULL_ROUNDS);
        let Ok(Command::Compare(config)) = parse(&["--rounds", "5", "--quick"]) else {
            panic!("expected a comparison");
        };
        assert_eq!(config.rounds, 5, "--rounds wins over the mode's own count");
        assert!(parse(&["--rounds", "0"]).is_err());
    }

    #[test]
    fn child_args_round_trip() {
        let spec = ChildSpec {
            contestant: "sqlx".into(),
            run: RunSpec {
                workload: Workload::MixedC64,
                db: PathBuf::from("/tmp/x.db"),
                plan: QUICK,
                batch_mode: BatchMode::RowByRow,
                tasks: Some(2),
            },
        };
        let owned = spec.to_args();
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let Ok(Command::Child(back)) = parse(&args) else {
            panic!("expected a child run");
        };
        assert_eq!(back.contestant, "sqlx");
        assert_eq!(back.run.workload, Workload::MixedC64);
        assert_eq!(back.run.plan, QUICK);
        assert_eq!(back.run.db, spec.run.db);
        assert_eq!(back.run.tasks, Some(2));
        assert_eq!(back.run.roles().len(), 2);
    }
}
