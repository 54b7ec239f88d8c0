//! The one shutdown signal: a cancellation token that SIGINT or SIGTERM cancels, passed
//! down to every stage so each can finish its batch, commit and return. The handlers are
//! installed before this returns, so a signal during start-up is not lost; `main` calls it
//! first of all, before parsing arguments, so a SIGTERM sent right after the process started
//! (a supervisor that changed its mind, a test) stops it cleanly instead of killing it.

use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

static SHUTDOWN: OnceLock<CancellationToken> = OnceLock::new();

/// The process's shutdown token, the handlers installed by the first call (inside a Tokio
/// runtime); every later call returns the same token.
pub fn on_signals() -> CancellationToken {
    SHUTDOWN.get_or_init(install).clone()
}

fn install() -> CancellationToken {
    let token = CancellationToken::new();
    let (interrupt, terminate) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    let (mut interrupt, mut terminate) = match (interrupt, terminate) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            // Logging is not set up yet when main calls this first.
            eprintln!("cannot listen for SIGINT/SIGTERM ({e}); stop with SIGKILL");
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
