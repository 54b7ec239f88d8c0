//! Lock waits while the pipeline runs flat out, sampled from `pg_stat_activity`: how many of
//! the bench database's backends are running a statement, and how many of those wait on a
//! heavyweight lock (a row lock, or the stats writers' advisory lock). With more instances of
//! a worker, a lock that serialises them shows here as waiting backends, not as throughput.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Means over the samples of backends of the bench database (ours excluded).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LockWait {
    pub samples: u64,
    /// Backends running a statement.
    pub active: f64,
    /// Backends waiting on any heavyweight lock (`wait_event_type = 'Lock'`).
    pub waiting: f64,
    /// Of those, waiting on an advisory lock (the stats lock).
    pub advisory: f64,
}

impl LockWait {
    /// The share of running backends that were waiting on a lock.
    pub fn share(&self) -> f64 {
        if self.active > 0.0 {
            self.waiting / self.active
        } else {
            0.0
        }
    }
}

/// Samples every `every` until `finish`.
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Result<LockWait>>,
}

impl Sampler {
    pub async fn start(url: &str, every: Duration) -> Result<Sampler> {
        let client = crate::db::connect(url).await?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let (mut sums, mut samples) = ([0i64; 3], 0u64);
            loop {
                let row = client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE state = 'active'),
                                count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
                                count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'
                                                 AND wait_event = 'advisory')
                         FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await?;
                for (i, sum) in sums.iter_mut().enumerate() {
                    *sum += row.get::<_, i64>(i);
                }
                samples += 1;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = token.cancelled() => break,
                }
            }
            let mean = |sum: i64| sum as f64 / samples.max(1) as f64;
            Ok(LockWait {
                samples,
                active: mean(sums[0]),
                waiting: mean(sums[1]),
                advisory: mean(sums[2]),
            })
        });
        Ok(Sampler { stop, task })
    }

    pub async fn finish(mut self) -> Result<LockWait> {
        self.stop.cancel();
        (&mut self.task)
            .await
            .map_err(|e| crate::error::Error::Config(format!("the lock sampler failed: {e}")))?
    }
}

/// A run that fails mid-window still ends the sampler, and its connection with it: the
/// bench database is dropped at the end.
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
