//! What every worker shares: its instance name, how it groups records into transactions,
//! and the standalone metrics server.

use std::time::Duration;

/// What every worker (fraud, stats, the verdict sink) shares: its instance name and how it
/// groups records into transactions (one per batch, closed when either limit is hit).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerSettings {
    /// This instance's name: unique among the instances of a stage, stable across its
    /// restarts (default: the host name). A restarted fraud worker reuses its transactional
    /// id, which fences its predecessor and aborts the transaction it left open at once,
    /// instead of read_committed consumers waiting for that transaction to time out.
    #[arg(long = "instance", env = "REVIEWFLOW_INSTANCE", global = true)]
    pub instance: Option<String>,

    /// Most records in one transaction.
    #[arg(
        long = "batch-records",
        env = "REVIEWFLOW_BATCH_RECORDS",
        default_value_t = 5000,
        global = true
    )]
    pub max_records: usize,

    /// How long a batch lingers for more records once it has one, in milliseconds: the
    /// latency it may add. 0 takes what has arrived, so a batch is what came in while the
    /// previous one was processed (small under light load, full under a backlog).
    #[arg(
        long = "batch-ms",
        env = "REVIEWFLOW_BATCH_MS",
        default_value_t = 0,
        global = true
    )]
    pub max_wait_ms: u64,
}

/// The standalone metrics server, for the workers (`cdc`, `fraud`, `verdicts`, `stats`),
/// which have no HTTP server of their own; `api` and `run` serve GET /metrics on their API
/// address anyway, and on this one too when it is set.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsSettings {
    /// Serve GET /metrics (Prometheus, OpenMetrics text) on this address; off when unset.
    #[arg(
        id = "metrics_listen",
        long = "metrics-listen",
        value_name = "ADDR",
        env = "REVIEWFLOW_METRICS_LISTEN",
        global = true
    )]
    pub listen: Option<std::net::SocketAddr>,
}

impl WorkerSettings {
    pub fn instance(&self) -> String {
        self.instance
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into())
            })
    }
}

/// How a worker groups records into one transaction: plain values for the Kafka consumer
/// loop (see `kafka::poll_batch`).
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most records in one batch.
    pub max_records: usize,
    /// How long a batch lingers for more records once it has one.
    pub max_wait: Duration,
}

impl WorkerSettings {
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.max_records,
            max_wait: Duration::from_millis(self.max_wait_ms),
        }
    }
}
