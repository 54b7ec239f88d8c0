//! The command-line arguments of `reviewflow bench`.

use std::path::PathBuf;

/// `reviewflow bench`: how big and how long each phase is. Unset sizes take the full run's
/// figures, or the quick form's with `--quick`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchConfig {
    /// The quick form: small backlog, short phases (a smoke run of every figure, ~1 minute).
    #[arg(id = "bench_quick", long = "quick")]
    pub quick: bool,

    /// Do not run the peers (Debezium, Kafka Streams); their lines say "skipped".
    #[arg(id = "bench_skip_peers", long = "skip-peers")]
    pub skip_peers: bool,

    /// Courses in the data (one review each before the run) [default: 100000; quick: 2000].
    #[arg(id = "bench_courses",
        value_name = "N", long = "courses", value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub courses: Option<u64>,

    /// Changes in the CDC backlog [default: 1000000; quick: 20000]; a multiple of 100.
    #[arg(id = "bench_backlog",
        value_name = "N", long = "backlog", value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub backlog: Option<u64>,

    /// Seconds the saturation phase is measured for [default: 60; quick: 6].
    #[arg(id = "bench_saturation_secs",
        value_name = "SECS", long = "saturation-secs", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub saturation_secs: Option<u64>,

    /// Offered rates of the latency phases, reviews per second [default: 1000,2500,5000,10000;
    /// quick: 500,2000].
    #[arg(id = "bench_rates",
        value_name = "RATES", long = "rates", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rates: Vec<u64>,

    /// Seconds of load at each latency rate (less when the courses run out: each course gets
    /// one review per rate) [default: 15; quick: 4].
    #[arg(id = "bench_latency_secs",
        value_name = "SECS", long = "latency-secs", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub latency_secs: Option<u64>,

    /// Times each latency rate is run (both latency phases); the report gives the median of
    /// the rounds and the worst round's p99 [default: 3; quick: 1].
    #[arg(id = "bench_rounds",
        value_name = "N", long = "rounds", value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: Option<u64>,

    /// Also measures saturation with two instances of each worker (fraud, stats, verdicts)
    /// in their groups, with the lock waits of both [default: true; quick: false].
    #[arg(id = "bench_scale_out", value_name = "BOOL", long = "scale-out",
        num_args = 0..=1, default_missing_value = "true")]
    pub scale_out: Option<bool>,

    /// The private database the run creates and drops.
    #[arg(
        id = "bench_database",
        value_name = "NAME",
        long = "bench-database",
        env = "REVIEWFLOW_BENCH_DATABASE",
        default_value = "rf_bench"
    )]
    pub database: String,

    /// Where the report is written (Markdown) [default: BENCHMARKS.md; quick:
    /// target/bench-quick/BENCHMARKS.md, so a smoke run never replaces the real report].
    #[arg(id = "bench_report", value_name = "PATH", long = "report")]
    pub report: Option<PathBuf>,

    /// Where the latency plot is written (PNG) [default: benchmarks-latency.png; quick:
    /// target/bench-quick/benchmarks-latency.png].
    #[arg(id = "bench_plot", value_name = "PATH", long = "plot")]
    pub plot: Option<PathBuf>,

    /// Also write every figure as JSON here (for scripts and tests).
    #[arg(id = "bench_json", value_name = "PATH", long = "json")]
    pub json: Option<PathBuf>,

    /// The peers' runner (`<dir>/run debezium|streams ...`).
    #[arg(
        id = "bench_peers_dir",
        value_name = "DIR",
        long = "peers-dir",
        env = "REVIEWFLOW_BENCH_PEERS",
        default_value = "bench/peers"
    )]
    pub peers_dir: PathBuf,

    /// Longest a peer may take, in seconds.
    #[arg(
        id = "bench_peer_timeout",
        value_name = "SECS",
        long = "peer-timeout-s",
        default_value_t = 600
    )]
    pub peer_timeout_secs: u64,

    /// Changes of the valid topic the Kafka Streams peer consumes (its first ones; the
    /// stats worker consumes all): 91 window updates per change make the peer slow enough
    /// that the whole topic would take most of the run.
    #[arg(
        id = "bench_streams_records",
        value_name = "N",
        long = "streams-records",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub streams_records: u64,
}
