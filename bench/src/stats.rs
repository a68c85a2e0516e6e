//! Latency histograms and per-run results.

use std::time::{Duration, Instant};

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most ~3% wide.
const SUB_BITS: u32 = 5;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// Values below `SUB_COUNT` get one bucket each; each power of two above gets `SUB_COUNT`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_COUNT;

/// A log-linear histogram of nanosecond latencies with a fixed size (15 KiB).
///
/// A fixed size matters here: a list of every latency would grow with the contestant's speed
/// and show up in the peak-memory figures.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl Histogram {
    /// Adds one latency.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// Number of latencies recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The latency at quantile `q` (0..=1), as the middle of its bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        // The rank of the sample we want, 1-based, never past the last one.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = bounds_of(bucket);
                return Duration::from_nanos(low + (high - low) / 2);
            }
        }
        unreachable!("rank is at most the total count")
    }
}

/// The bucket holding `value`.
fn bucket_of(value: u64) -> usize {
    if value < SUB_COUNT as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    // The top SUB_BITS + 1 bits of the value; the leading one is implied by the exponent.
    let mantissa = (value >> shift) as usize - SUB_COUNT;
    (shift as usize + 1) * SUB_COUNT + mantissa
}

/// The smallest and largest value in `bucket`.
fn bounds_of(bucket: usize) -> (u64, u64) {
    if bucket < SUB_COUNT {
        return (bucket as u64, bucket as u64);
    }
    let shift = (bucket / SUB_COUNT - 1) as u32;
    let mantissa = (bucket % SUB_COUNT + SUB_COUNT) as u64;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// What one task saw during a run.
#[derive(Clone, Default)]
pub struct TaskStats {
    /// Whether this task's successes count (false for `read_during_write`'s writer).
    pub measured: bool,
    /// Latencies of the counted operations that succeeded.
    pub latencies: Histogram,
    /// Operations that failed inside the measured window, whether the task is measured or not,
    /// so a failing writer still shows.
    pub errors: u64,
    /// The first error's message, to show what went wrong.
    pub first_error: Option<String>,
    /// When the first counted operation started: a warm-up operation still running when the
    /// window opened is not counted, so neither is its time.
    pub first_start: Option<Instant>,
    /// When the last counted operation finished.
    pub last_finish: Option<Instant>,
    /// Posts the task's successful operations inserted, warm-up and all: the file must hold
    /// exactly these once the run is over (see `data::check_posts`).
    pub posts_written: u64,
}

impl TaskStats {
    /// Empty figures for a task whose successes count when `measured`.
    pub fn new(measured: bool) -> Self {
        TaskStats {
            measured,
            ..TaskStats::default()
        }
    }

    /// Records one operation that ran from `started` to `finished`.
    ///
    /// Only operations that started inside the measured window (`in_window`) are kept: the
    /// warm-up's are dropped, successes and errors alike.
    pub fn record<E: ToString>(
        &mut self,
        started: Instant,
        finished: Instant,
        in_window: bool,
        result: Result<(), E>,
    ) {
        if !in_window {
            return;
        }
        match result {
            Ok(()) if self.measured => {
                self.latencies.record(finished - started);
                self.first_start.get_or_insert(started);
                self.last_finish = Some(finished);
            }
            Ok(()) => {}
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }

    /// Folds another task's figures into this one.
    pub fn merge(&mut self, other: TaskStats) {
        self.latencies.merge(&other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.first_start = match (self.first_start, other.first_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_finish = self.last_finish.max(other.last_finish);
        self.posts_written += other.posts_written;
    }
}

/// The result of one contestant on one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Successful counted operations.
    pub ops: u64,
    /// Failed operations in the measured window (see [`TaskStats::errors`]).
    pub errors: u64,
    /// From the start of the measured window to the last counted operation's end.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// The first error's message, if any.
    pub first_error: Option<String>,
    /// Peak resident set of the process that ran it, in KiB, when measured in a child.
    pub peak_rss_kib: Option<u64>,
    /// Resident set of that child before the contestant opened its database, in KiB.
    pub start_rss_kib: Option<u64>,
}

impl Measurement {
    /// Summarises the merged task figures of a run whose measured window began at `window`.
    pub fn from_stats(stats: &TaskStats, window: Instant) -> Self {
        let from = stats.first_start.unwrap_or(window).max(window);
        let elapsed = stats
            .last_finish
            .map_or(Duration::ZERO, |last| last.saturating_duration_since(from));
        Measurement {
            ops: stats.latencies.len(),
            errors: stats.errors,
            elapsed,
            p50: stats.latencies.quantile(0.50),
            p99: stats.latencies.quantile(0.99),
            first_error: stats.first_error.clone(),
            peak_rss_kib: None,
            start_rss_kib: None,
        }
    }

    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ops as f64 / self.elapsed.as_secs_f64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        for value in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX]) {
            let (low, high) = bounds_of(bucket_of(value));
            assert!(
                low <= value && value <= high,
                "{value} not in {low}..={high}"
            );
        }
        for bucket in 1..BUCKETS {
            assert_eq!(bounds_of(bucket - 1).1 + 1, bounds_of(bucket).0);
        }
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let mut histogram = Histogram::default();
        for micros in 1..=1000 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile(0.5).as_secs_f64() * 1e6;
        let p99 = histogram.quantile(0.99).as_secs_f64() * 1e6;
        assert!((p50 - 500.0).abs() < 500.0 * 0.04, "p50 {p50}");
        assert!((p99 - 990.0).abs() < 990.0 * 0.04, "p99 {p99}");
    }
}
