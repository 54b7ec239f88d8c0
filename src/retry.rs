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

/// A stage's reason once shutdown ended it.
const STOPPING: &str = "stopped: the process is shutting down";

/// Runs a stage's sessions until one ends cleanly (shutdown) or fails in a way a restart
/// cannot cure; other failures (a broker or database that went away, a fenced transaction)
/// start a new session after a backoff, reset once a session has lived a minute. What the
/// stage is doing is reported to `health` as it changes, under the name `stage`.
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
    // Failures since a session last lived a minute: the "attempt" an operator sees.
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        crate::health::running(stage);
        match session().await {
            Ok(()) => {
                // Only shutdown should end a stage; one that ends by itself must not pass for
                // a stage that was asked to stop.
                let why = if shutdown.is_cancelled() {
                    STOPPING
                } else {
                    "ended by itself, though nothing asked it to stop: see its log, and restart it"
                };
                crate::health::stopped(stage, why);
                return Ok(());
            }
            Err(e) if e.needs_operator() => {
                crate::health::stopped(stage, &e.to_string());
                return Err(e);
            }
            Err(e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff.reset();
                    attempt = 0;
                }
                attempt += 1;
                let delay = backoff.next_delay();
                failed(stage, attempt, delay, &e);
                tracing::warn!(stage, error = %e, retry_in = ?delay, attempt, "session failed; starting a new one");
                if !sleep(delay, shutdown).await {
                    crate::health::stopped(stage, STOPPING);
                    return Ok(());
                }
            }
        }
    }
}

/// A failure that will be retried after `delay`, counted and shown as the stage restarting.
fn failed(stage: &str, attempt: u32, delay: Duration, e: &crate::Error) {
    crate::metrics::session_failures(stage).inc();
    crate::health::restarting(stage, attempt, delay, &e.to_string());
}

/// Runs a stage's setup (its topics checked or made, its schemas registered) until it
/// succeeds or fails in a way a retry cannot cure. A broker or database not up yet, or an
/// admin request that timed out on a loaded cluster, is asked again after the same backoff
/// as a session, instead of ending the process before its first session. None: shutdown
/// came first.
pub async fn setup<T, F, Fut>(
    stage: &str,
    shutdown: &CancellationToken,
    mut f: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut attempt = 0;
    loop {
        let ready = match crate::failpoint::hit(crate::failpoint::STAGE_SETUP) {
            Ok(()) => f().await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(ready) => return Ok(Some(ready)),
            Err(e) if e.needs_operator() => {
                crate::health::stopped(stage, &e.to_string());
                return Err(e);
            }
            Err(e) => {
                attempt += 1;
                let delay = backoff.next_delay();
                failed(stage, attempt, delay, &e);
                tracing::warn!(stage, error = %e, retry_in = ?delay, attempt, "setup failed; trying again");
                if !sleep(delay, shutdown).await {
                    crate::health::stopped(stage, STOPPING);
                    return Ok(None);
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

    /// A transient failure restarts the session and shows it restarting; one that needs a
    /// person ends the loop with the stage stopped and its message kept as the reason.
    #[tokio::test]
    async fn a_transient_failure_restarts_and_a_permanent_one_stops() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let result = sessions("unit-sessions", &shutdown, || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 => Err(crate::Error::Failpoint("unit")),
                    _ => {
                        // The second session runs: the restart was reported, and now it runs.
                        let report = &crate::health::stages()["unit-sessions"];
                        assert!(report.is_running(), "{report:?}");
                        Err(crate::Error::Config("set X; then restart".into()))
                    }
                }
            }
        })
        .await;
        assert!(matches!(result, Err(crate::Error::Config(_))), "{result:?}");
        assert_eq!(calls, 2);
        let report = &crate::health::stages()["unit-sessions"];
        assert_eq!(report.state, "stopped");
        assert_eq!(
            report.reason.as_deref(),
            Some("configuration: set X; then restart")
        );
        let text = crate::metrics::encode(&[]);
        assert!(
            text.contains("reviewflow_stage_restarts_total{stage=\"unit-sessions\"} 1\n"),
            "{text}"
        );
    }
}
