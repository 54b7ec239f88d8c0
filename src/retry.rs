//! The one retry policy: exponential backoff with a cap, reset after a success, waiting in a
//! way that a shutdown interrupts.

use std::time::Duration;

use std::future::Future;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay to wait now; each call doubles the next one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps the next delay; false when shutdown came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        sleep(self.next_delay(), shutdown).await
    }
}

/// Sleeps `delay` (one a server asked for, say); false when shutdown came first.
pub async fn sleep(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Runs a stage's sessions until one ends cleanly (shutdown) or fails in a way a restart
/// cannot cure; other failures (a broker or database that went away, a fenced transaction)
/// start a new session after a backoff, reset once a session has lived a minute.
pub async fn sessions<F, Fut>(
    stage: &str,
    shutdown: &CancellationToken,
    mut session: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        match session().await {
            Ok(()) => return Ok(()),
            Err(e) if e.needs_operator() => return Err(e),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                crate::metrics::session_failures(stage).inc();
                tracing::warn!(stage, error = %e, retry_in = ?delay, "session failed; starting a new one");
                if !sleep(delay, shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
