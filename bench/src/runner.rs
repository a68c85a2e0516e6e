//! The comparison: every selected workload, every selected contestant, one table.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli::{ChildSpec, Config};
use crate::contestants::{self, BatchMode, Contestant};
use crate::data::{self, ScratchDir};
use crate::driver::RunSpec;
use crate::report::{self, Report, ReportRow};
use crate::rss;
use crate::stats::Measurement;
use crate::workload::Workload;

/// Runs the comparison `config` asks for and prints the report.
pub fn compare(config: &Config) -> ExitCode {
    let workloads = select_workloads(config);
    let contestants = match select_contestants(config) {
        Ok(contestants) => contestants,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if workloads.is_empty() || contestants.is_empty() {
        eprintln!("error: the filters left nothing to run (see --list)");
        return ExitCode::from(2);
    }
    let scratch = match ScratchDir::new() {
        Ok(scratch) => scratch,
        Err(error) => {
            eprintln!("error: cannot create a scratch directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    if config.in_process {
        contestants::set_up_sqlite_as_litemux_does();
    }
    let template = scratch.path().join("template.db");
    if let Err(error) = data::create_template(&template) {
        eprintln!("error: cannot build the seeded database: {error}");
        return ExitCode::FAILURE;
    }

    // Every (workload, contestant, batch mode): one line of the report each.
    let lines: Vec<(Workload, &dyn Contestant, BatchMode)> = workloads
        .iter()
        .flat_map(|&workload| {
            contestants.iter().flat_map(move |contestant| {
                batch_modes(workload, contestant.as_ref())
                    .iter()
                    .map(move |&mode| (workload, contestant.as_ref(), mode))
            })
        })
        .collect();
    // Run order: one workload at a time; within it, every line once per round, so that a
    // machine that slows down for a while slows every contestant's round of that moment.
    let runs: Vec<(usize, usize)> = workloads
        .iter()
        .flat_map(|&workload| {
            let lines = &lines;
            (0..config.rounds).flat_map(move |round| {
                lines
                    .iter()
                    .enumerate()
                    .filter(move |(_, (w, _, _))| *w == workload)
                    .map(move |(line, _)| (line, round))
            })
        })
        .collect();
    let started = Instant::now();
    let mut rounds: Vec<Vec<Result<Measurement, String>>> = vec![Vec::new(); lines.len()];
    for (index, &(line, round)) in runs.iter().enumerate() {
        let (workload, contestant, mode) = lines[line];
        let label = label(contestant.name(), mode);
        let of_rounds = if config.rounds > 1 {
            format!(", round {}/{}", round + 1, config.rounds)
        } else {
            String::new()
        };
        eprint!(
            "[{:>2}/{}] {} / {label}{of_rounds} ... ",
            index + 1,
            runs.len(),
            workload.name()
        );
        let db = scratch.path().join(format!(
            "{}-{}.db",
            workload.name(),
            label.replace(' ', "_")
        ));
        let spec = RunSpec {
            workload,
            db: db.clone(),
            plan: config.plan,
            batch_mode: mode,
            tasks: config.tasks,
        };
        let result = run_one(&template, contestant, &spec, config.in_process);
        data::remove_database(&db);
        match &result {
            Ok(m) => eprintln!(
                "{} ops/s, {} errors",
                report::ops(m.ops_per_sec()),
                m.errors
            ),
            Err(reason) => eprintln!("failed: {reason}"),
        }
        rounds[line].push(result);
    }
    let rows = lines
        .iter()
        .zip(rounds)
        .map(|(&(workload, contestant, mode), rounds)| ReportRow {
            workload,
            label: label(contestant.name(), mode),
            rounds,
        })
        .collect();

    let mut settings = config.tasks.map_or_else(String::new, |n| {
        format!(", concurrent workloads run by {n} task(s) (--tasks)")
    });
    if let Some(options) = contestants::litemux_url_options() {
        settings.push_str(&format!(
            ", litemux URL options `{options}` ({})",
            contestants::LITEMUX_URL_OPTIONS_VAR
        ));
    }
    let report = Report {
        heading: format!(
            "litemux-bench compare: {} mode, {} round(s) of {:?} warm-up + {:?} measured per \
             contestant, {} cores, total {:.0?}{settings}",
            config.mode,
            config.rounds,
            config.plan.warmup,
            config.plan.measure,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            started.elapsed(),
        ),
        rows,
        missing: contestants::missing(),
    };
    println!("{}", report.render());
    ExitCode::SUCCESS
}

/// Prints the workloads and contestants that `--only` and `--contestants` can name.
pub fn list() {
    println!("workloads:");
    for workload in Workload::ALL {
        println!(
            "  {:<18} {} task(s)",
            workload.name(),
            workload.tasks().len()
        );
    }
    println!("contestants:");
    for contestant in contestants::all() {
        println!("  {}", contestant.name());
    }
    for (name, reason) in contestants::missing() {
        println!("  {name} (not in this build: {reason})");
    }
}

/// Copies the seeded database to `spec.db` and runs `contestant` on it in a fresh child process
/// (see the crate docs for why), or here with `in_process`.
fn run_one(
    template: &Path,
    contestant: &dyn Contestant,
    spec: &RunSpec,
    in_process: bool,
) -> Result<Measurement, String> {
    data::fresh_copy(template, &spec.db)
        .map_err(|error| format!("cannot copy the seeded database: {error}"))?;
    if in_process {
        return contestant.run(spec);
    }
    rss::run_in_child(&ChildSpec {
        contestant: contestant.name().to_owned(),
        run: spec.clone(),
    })
}

fn select_workloads(config: &Config) -> Vec<Workload> {
    Workload::ALL
        .into_iter()
        .filter(|workload| {
            config.only.is_empty()
                || config
                    .only
                    .iter()
                    .any(|part| workload.name().contains(part.as_str()))
        })
        .collect()
}

fn select_contestants(config: &Config) -> Result<Vec<Box<dyn Contestant>>, String> {
    let all = contestants::all();
    let Some(wanted) = &config.contestants else {
        return Ok(all);
    };
    for name in wanted {
        if let Some((_, reason)) = contestants::missing().iter().find(|(n, _)| n == name) {
            return Err(format!("contestant {name} is not in this build: {reason}"));
        }
        if !all.iter().any(|contestant| contestant.name() == name) {
            return Err(format!("unknown contestant {name} (see --list)"));
        }
    }
    // Keep the registry's order, so the baseline still comes first.
    Ok(all
        .into_iter()
        .filter(|contestant| wanted.iter().any(|name| name == contestant.name()))
        .collect())
}

fn batch_modes(workload: Workload, contestant: &dyn Contestant) -> &'static [BatchMode] {
    if workload == Workload::BatchInsert10k {
        contestant.batch_modes()
    } else {
        &[BatchMode::RowByRow]
    }
}

/// The table's name for a contestant in a batch mode.
fn label(name: &str, mode: BatchMode) -> String {
    match mode {
        BatchMode::RowByRow => name.to_owned(),
        other => format!("{name} ({})", other.name()),
    }
}
