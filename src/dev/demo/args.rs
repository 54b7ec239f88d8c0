//! The command-line arguments of `reviewflow demo`.

/// `reviewflow demo`: how much load, over how many courses, for how long.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoConfig {
    /// Changes written per second (inserts, edits and deletes together).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,

    /// Courses the reviews are spread over: course ids 1 to this.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    pub courses: i64,

    /// Stop after this many seconds; without it, run until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub duration: Option<u64>,

    /// Seed of the generator: a seed always writes the same sequence of changes (default:
    /// taken from the clock, and logged so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
}
