//! The one shutdown signal: a cancellation token that SIGINT or SIGTERM cancels, passed
//! down to every stage so each can finish its batch, commit and return. The handlers are
//! installed before this returns, so a signal during start-up is not lost.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let (interrupt, terminate) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    let (mut interrupt, mut terminate) = match (interrupt, terminate) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop with SIGKILL");
            return token;
        }
    };
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("interrupted; shutting down"),
            _ = terminate.recv() => tracing::info!("terminated; shutting down"),
        }
        cancel.cancel();
    });
    token
}
