//! How the bench waits and shows it: Ctrl-C checks, spinners and timed bars for long work,
//! and the one polling loop every phase waits on a condition with.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::Run;
use crate::error::{Error, Result};

pub(super) fn check(shutdown: &CancellationToken) -> Result<()> {
    if shutdown.is_cancelled() {
        Err(Error::Config("interrupted".into()))
    } else {
        Ok(())
    }
}

/// A spinner with a message and the time spent, on stderr when it is a terminal.
pub(super) fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.clone());
    bar.enable_steady_tick(Duration::from_millis(200));
    tracing::info!("{message}");
    bar
}

/// A bar over `secs` seconds of a timed phase.
pub(super) fn timed(message: String, secs: u64) -> ProgressBar {
    let bar = ProgressBar::new(secs);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message.clone());
    tracing::info!("{message}");
    bar
}

/// A condition polled by [`wait_until`].
type Check<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>>;

/// Polls `done` every `every` until it holds, a stage dies, `limit` passes or Ctrl-C.
pub(super) async fn wait_until<F>(
    run: &mut Run,
    what: &str,
    every: Duration,
    limit: Duration,
    shutdown: &CancellationToken,
    mut done: F,
) -> Result<()>
where
    F: for<'a> FnMut(&'a Run) -> Check<'a>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done(run).await? {
            return Ok(());
        }
        run.check_stages()?;
        check(shutdown)?;
        if std::time::Instant::now() > deadline {
            return Err(Error::Command {
                what: what.into(),
                detail: format!("not done within {} s", limit.as_secs()),
            });
        }
        tokio::time::sleep(every).await;
    }
}
