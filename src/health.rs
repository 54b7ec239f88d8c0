//! What each stage of this process is doing: running, restarting after a failure a new
//! session may cure, or stopped on one that needs a person. The stages' restart loop
//! (`retry::sessions`) writes it; GET /healthz, `reviewflow status` (through /healthz) and
//! the `reviewflow_stage_up` gauge read it. One table per process, like the metrics: the
//! restart loop runs deep inside each stage, and passing a handle down every stage's
//! constructor would change every stage for one line of reporting.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A stage's state as it was last reported.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Running,
    Restarting {
        attempt: u32,
        next_at: Instant,
        reason: String,
    },
    Stopped {
        reason: String,
    },
}

static STAGES: Mutex<BTreeMap<String, State>> = Mutex::new(BTreeMap::new());

fn set(stage: &str, state: State) {
    let up = i64::from(state == State::Running);
    crate::metrics::stage_up(stage).set(up);
    STAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(stage.to_string(), state);
}

/// The stage started (or started again) a session.
pub fn running(stage: &str) {
    // Its restart counters exist from the start, at 0: Prometheus's increase() cannot see
    // the first restart of a series that appears at 1.
    crate::metrics::stage_restarts(stage);
    crate::metrics::session_failures(stage);
    set(stage, State::Running);
}

/// The stage failed with `reason` and starts its `attempt`-th new session after `delay`.
pub fn restarting(stage: &str, attempt: u32, delay: Duration, reason: &str) {
    crate::metrics::stage_restarts(stage).inc();
    set(
        stage,
        State::Restarting {
            attempt,
            next_at: Instant::now() + delay,
            reason: reason.to_string(),
        },
    );
}

/// The stage ended: on a failure that needs a person (`reason` names the fix), or because
/// the process is stopping.
pub fn stopped(stage: &str, reason: &str) {
    set(
        stage,
        State::Stopped {
            reason: reason.to_string(),
        },
    );
}

/// One stage as GET /healthz shows it (and `reviewflow status` reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// `running`, `restarting` or `stopped`.
    pub state: String,
    /// The failure's message: what went wrong and, for a stopped stage, the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Restarting: which new session comes next (1 for the first after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Restarting: seconds until it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_in_s: Option<f64>,
}

impl StageReport {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// The one-line form `reviewflow status` prints.
    pub fn line(&self, stage: &str) -> String {
        let mut line = format!("  {stage:<17} {}", self.state);
        if let (Some(attempt), Some(next)) = (self.attempt, self.next_in_s) {
            line.push_str(&format!(" (attempt {attempt}, next in {next:.1} s)"));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(": {reason}"));
        }
        line
    }
}

/// Every stage that reported, by name; empty in a process that runs none (`reviewflow api`).
pub fn stages() -> BTreeMap<String, StageReport> {
    let now = Instant::now();
    let stages = STAGES.lock().unwrap_or_else(PoisonError::into_inner);
    stages
        .iter()
        .map(|(name, state)| {
            let report = match state {
                State::Running => StageReport {
                    state: "running".into(),
                    reason: None,
                    attempt: None,
                    next_in_s: None,
                },
                State::Restarting {
                    attempt,
                    next_at,
                    reason,
                } => StageReport {
                    state: "restarting".into(),
                    reason: Some(reason.clone()),
                    attempt: Some(*attempt),
                    // Rounded to tenths: a person reads it, and a float's tail is noise.
                    next_in_s: Some(
                        (next_at.saturating_duration_since(now).as_secs_f64() * 10.0).round()
                            / 10.0,
                    ),
                },
                State::Stopped { reason } => StageReport {
                    state: "stopped".into(),
                    reason: Some(reason.clone()),
                    attempt: None,
                    next_in_s: None,
                },
            };
            (name.clone(), report)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_is_reported_with_its_reason_and_gauge() {
        running("unit-health");
        assert!(stages()["unit-health"].is_running());
        let text = crate::metrics::encode(&[]);
        assert!(
            text.contains("reviewflow_stage_up{stage=\"unit-health\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_stage_restarts_total{stage=\"unit-health\"} 0\n"),
            "{text}"
        );

        restarting(
            "unit-health",
            2,
            Duration::from_secs(4),
            "kafka: broker down",
        );
        let report = &stages()["unit-health"];
        assert_eq!(report.state, "restarting");
        assert_eq!(report.attempt, Some(2));
        assert!(
            report.next_in_s.is_some_and(|s| s > 3.0 && s <= 4.0),
            "{report:?}"
        );
        assert!(report
            .line("unit-health")
            .contains("restarting (attempt 2, next in"));
        let text = crate::metrics::encode(&[]);
        assert!(
            text.contains("reviewflow_stage_up{stage=\"unit-health\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("reviewflow_stage_restarts_total{stage=\"unit-health\"} 1\n"),
            "{text}"
        );

        stopped("unit-health", "configuration: fix it so");
        let report = &stages()["unit-health"];
        assert_eq!(report.state, "stopped");
        assert_eq!(
            report.line("x"),
            format!("  {:<17} stopped: configuration: fix it so", "x")
        );
        let shown = serde_json::to_value(report).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"state": "stopped", "reason": "configuration: fix it so"})
        );
    }
}
