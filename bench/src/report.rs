//! The printed results: the comparison table, the memory table and the notes under them.

use std::fmt::Write as _;
use std::time::Duration;

use crate::contestants::BASELINE;
use crate::stats::Measurement;
use crate::workload::Workload;

/// One line of the table: one contestant (or one of its batch modes) on one workload.
#[derive(Debug)]
pub struct ReportRow {
    /// The workload.
    pub workload: Workload,
    /// The contestant's name, with the batch mode when it is not the default one.
    pub label: String,
    /// What each round measured, or why it measured nothing, in run order.
    pub rounds: Vec<Result<Measurement, String>>,
}

impl ReportRow {
    /// The round the table shows: the one with the median throughput (the upper of the two
    /// middle ones for an even count), or the first failure if any round failed.
    pub fn shown(&self) -> Result<&Measurement, &str> {
        let mut measured = Vec::with_capacity(self.rounds.len());
        for round in &self.rounds {
            match round {
                Ok(m) => measured.push(m),
                Err(reason) => return Err(reason),
            }
        }
        measured.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        measured
            .get(measured.len() / 2)
            .copied()
            .ok_or("no rounds ran")
    }

    /// Each round's throughput, if every round measured something.
    fn throughputs(&self) -> Option<Vec<f64>> {
        self.rounds
            .iter()
            .map(|round| round.as_ref().ok().map(Measurement::ops_per_sec))
            .collect()
    }

    /// Failed operations summed over the rounds.
    fn errors(&self) -> u64 {
        self.rounds.iter().flatten().map(|m| m.errors).sum()
    }
}

/// The median of `values` (the mean of the two middle ones for an even count, so that an
/// even number of rounds favours nobody).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Everything the report shows.
#[derive(Debug)]
pub struct Report {
    /// First line: mode and run lengths.
    pub heading: String,
    /// The measured lines, in run order.
    pub rows: Vec<ReportRow>,
    /// Planned contestants that this build lacks, with the reason.
    pub missing: Vec<(&'static str, &'static str)>,
}

impl Report {
    /// Renders the whole report as text.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n\n", self.heading);
        out.push_str(&self.main_table());
        out.push_str(&self.memory_table());
        out.push_str(&self.notes());
        out
    }

    /// `row`'s throughput relative to the baseline's on the same workload: the median of the
    /// ratios of each round to the baseline's round of the same number, which ran next to it.
    fn ratio(&self, row: &ReportRow) -> Option<f64> {
        let baseline = self
            .rows
            .iter()
            .find(|base| base.workload == row.workload && base.label == BASELINE)?;
        let (mine, theirs) = (row.throughputs()?, baseline.throughputs()?);
        if mine.len() != theirs.len() {
            return None;
        }
        let ratios = mine
            .iter()
            .zip(&theirs)
            .filter(|&(_, &base)| base > 0.0)
            .map(|(ops, base)| ops / base)
            .collect();
        median(ratios)
    }

    /// The most rounds any line ran.
    fn rounds(&self) -> usize {
        self.rows
            .iter()
            .map(|row| row.rounds.len())
            .max()
            .unwrap_or(0)
    }

    fn main_table(&self) -> String {
        let header = [
            "workload",
            "contestant",
            "ops/s",
            "p50",
            "p99",
            "vs diesel_sync",
            "errors",
        ];
        let lines = self.rows.iter().map(|row| {
            let mut cells = vec![row.workload.name().to_owned(), row.label.clone()];
            match row.shown() {
                Ok(m) => {
                    let ratio = self
                        .ratio(row)
                        .map_or("n/a".to_owned(), |ratio| format!("{ratio:.2}x"));
                    cells.extend([
                        ops(m.ops_per_sec()),
                        duration(m.p50),
                        duration(m.p99),
                        ratio,
                        row.errors().to_string(),
                    ]);
                }
                Err(_) => cells.extend(["failed", "-", "-", "-", "-"].map(str::to_owned)),
            }
            cells
        });
        table(&header, lines.collect(), 2)
    }

    fn memory_table(&self) -> String {
        let lines: Vec<Vec<String>> = self
            .rows
            .iter()
            .filter(|row| row.workload.measures_rss())
            .filter_map(|row| {
                let m = row.shown().ok()?;
                // The highest peak of any round: memory is judged by its worst case.
                let peak = row
                    .rounds
                    .iter()
                    .flatten()
                    .filter_map(|m| m.peak_rss_kib)
                    .max()?;
                Some(vec![
                    row.workload.name().to_owned(),
                    row.label.clone(),
                    mib(peak),
                    m.start_rss_kib.map_or("-".to_owned(), mib),
                ])
            })
            .collect();
        if lines.is_empty() {
            return String::new();
        }
        let header = ["workload", "contestant", "peak RSS", "RSS at start"];
        format!(
            "\nPeak memory: every run is a fresh child process of this binary;\npeak RSS is its VmHWM at the end, RSS at start its VmRSS before opening \
             the database.\n\n{}",
            table(&header, lines, 2)
        )
    }

    fn notes(&self) -> String {
        let mut out = String::from("\nNotes:\n");
        let _ = writeln!(
            out,
            "- ops/s counts successful operations started in the measured window; p50/p99 are \
             their latencies.\n- Sync contestants run one OS thread with its own connection \
             per task (the ideal sync limit);\n  async ones run tokio tasks on a multi-thread \
             runtime (one worker per core) over 8 connections\n  (pools of 8; litemux: 1 writer \
             + 7 readers)."
        );
        let rounds = self.rounds();
        if rounds > 1 {
            let _ = writeln!(
                out,
                "- Each contestant ran {rounds} rounds per workload, interleaved with the other \
                 contestants' rounds;\n  the table shows the round with the median throughput, \
                 the ratio is the median of each round's\n  ratio to the baseline's round next \
                 to it, and errors are summed over the rounds."
            );
        }
        let mut seen = Vec::new();
        for row in &self.rows {
            let workload = row.workload;
            if !seen.contains(&workload) && !matches!(workload.unit(), "one point read") {
                seen.push(workload);
                let _ = writeln!(out, "- {}: one op = {}.", workload.name(), workload.unit());
            }
        }
        for row in &self.rows {
            let first_error = row
                .rounds
                .iter()
                .flatten()
                .find_map(|m| m.first_error.as_ref());
            let problem = match row.shown() {
                Err(reason) => Some(format!("failed: {reason}")),
                Ok(_) => {
                    first_error.map(|first| format!("{} errors, first: {first}", row.errors()))
                }
            };
            if let Some(problem) = problem {
                let _ = writeln!(out, "- {} / {}: {problem}", row.workload.name(), row.label);
            }
        }
        for (name, reason) in &self.missing {
            let _ = writeln!(out, "- not measured: {name} ({reason}).");
        }
        out
    }
}

/// Lays out `lines` under `header`: the first `left` columns left-aligned, the rest right.
fn table(header: &[&str], lines: Vec<Vec<String>>, left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let separator = if column == 0 { "" } else { "  " };
            if column < left {
                let _ = write!(text, "{separator}{cell:<width$}");
            } else {
                let _ = write!(text, "{separator}{cell:>width$}");
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = render(header.to_vec());
    let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for line in &lines {
        out.push_str(&render(line.iter().map(String::as_str).collect()));
    }
    out
}

/// Operations per second: thousands separated when large, two decimals when small.
pub fn ops(per_sec: f64) -> String {
    if per_sec < 10.0 {
        return format!("{per_sec:.2}");
    }
    if per_sec < 1000.0 {
        return format!("{per_sec:.1}");
    }
    let digits = format!("{per_sec:.0}");
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A latency with a unit that keeps three significant digits or so.
pub fn duration(value: Duration) -> String {
    let nanos = value.as_nanos() as f64;
    if nanos < 1e3 {
        format!("{nanos:.0}ns")
    } else if nanos < 1e6 {
        format!("{:.1}µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.1}ms", nanos / 1e6)
    } else {
        format!("{:.2}s", nanos / 1e9)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ops(1_234_567.4), "1,234,567");
        assert_eq!(ops(999.0), "999.0");
        assert_eq!(ops(3.456), "3.46");
        assert_eq!(duration(Duration::from_nanos(4_150)), "4.2µs");
        assert_eq!(duration(Duration::from_millis(210)), "210.0ms");
    }

    #[test]
    fn ratios_are_to_the_baseline_of_the_same_workload() {
        let measured = measured_ops;
        let row = |workload, label: &str, ops| ReportRow {
            workload,
            label: label.to_owned(),
            rounds: vec![Ok(measured(ops))],
        };
        let report = Report {
            heading: String::new(),
            rows: vec![
                row(Workload::InsertSeq, BASELINE, 1000),
                row(Workload::InsertSeq, "other", 500),
                row(Workload::Scan10k, "other", 7),
            ],
            missing: vec![],
        };
        let text = report.render();
        assert!(text.contains("0.50x"), "{text}");
        assert!(text.contains("n/a"), "{text}");
    }

    #[test]
    fn rounds_give_the_median_round_and_the_median_of_paired_ratios() {
        let measured = |ops, errors| Measurement {
            ops,
            errors,
            elapsed: Duration::from_secs(1),
            p50: Duration::from_micros(ops),
            p99: Duration::from_micros(2 * ops),
            first_error: None,
            peak_rss_kib: Some(ops),
            start_rss_kib: None,
        };
        // The machine slows down in round 2: both contestants lose half their speed there.
        let baseline = ReportRow {
            workload: Workload::PointReadC64,
            label: BASELINE.to_owned(),
            rounds: vec![
                Ok(measured(1000, 0)),
                Ok(measured(500, 0)),
                Ok(measured(1000, 0)),
            ],
        };
        let other = ReportRow {
            workload: Workload::PointReadC64,
            label: "other".to_owned(),
            rounds: vec![
                Ok(measured(600, 1)),
                Ok(measured(300, 2)),
                Ok(measured(700, 0)),
            ],
        };
        assert_eq!(other.shown().unwrap().ops, 600);
        assert_eq!(other.errors(), 3);
        let report = Report {
            heading: String::new(),
            rows: vec![baseline, other],
            missing: vec![],
        };
        // Paired ratios 0.6, 0.6, 0.7: the median is 0.6, where the ratio of the median rounds
        // (600 / 1000) happens to agree and a pairing across rounds would not (600 / 500).
        assert_eq!(report.ratio(&report.rows[1]), Some(0.6));
        let text = report.render();
        assert!(text.contains("0.60x"), "{text}");
        assert!(text.contains("3 rounds per workload"), "{text}");
        assert!(
            text.contains("0.7 MiB"),
            "the highest peak of any round: {text}"
        );

        let failed = ReportRow {
            workload: Workload::PointReadC64,
            label: "broken".to_owned(),
            rounds: vec![Ok(measured(600, 0)), Err("crashed".to_owned())],
        };
        assert_eq!(failed.shown().unwrap_err(), "crashed");
    }

    fn measured_ops(ops: u64) -> Measurement {
        Measurement {
            ops,
            errors: 0,
            elapsed: Duration::from_secs(1),
            p50: Duration::from_micros(1),
            p99: Duration::from_micros(2),
            first_error: None,
            peak_rss_kib: None,
            start_rss_kib: None,
        }
    }

    /// With an even `--rounds N` the ratio is the mean of the two middle rounds' ratios (it
    /// was the upper one, and the baseline's own ratio being 1, noise could only lift every
    /// other contestant: one as fast as the baseline on average, 0.9x and 1.1x, showed 1.10x).
    #[test]
    fn an_even_round_count_does_not_favour_every_contestant_over_the_baseline() {
        let row = |label: &str, rounds: [u64; 2]| ReportRow {
            workload: Workload::InsertSeq,
            label: label.to_owned(),
            rounds: rounds.iter().map(|&ops| Ok(measured_ops(ops))).collect(),
        };
        let report = Report {
            heading: String::new(),
            rows: vec![row(BASELINE, [1000, 1000]), row("other", [900, 1100])],
            missing: vec![],
        };
        let ratio = report.ratio(&report.rows[1]).expect("a ratio");
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "a contestant as fast as the baseline on average reported at {ratio:.2}x"
        );
    }
}
