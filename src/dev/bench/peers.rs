//! The peers a user would otherwise pick (Debezium's PostgreSQL connector, a Kafka Streams
//! version of the original aggregation), run by `<peers dir>/run` on the same machine, data
//! and run. The runner prints, as its last stdout line, one JSON object with `records`,
//! `seconds`, `records_per_s`, `startup_seconds` and `peak_rss_kb`; it exits non-zero on
//! failure. A peer that is not there or fails is reported as skipped with the reason: never
//! a made-up figure.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What a peer measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerFigures {
    pub peer: String,
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub startup_seconds: Option<f64>,
    pub peak_rss_kb: Option<u64>,
}

/// A peer's outcome: figures, or why there are none.
#[derive(Clone, Debug, serde::Serialize)]
pub enum PeerOutcome {
    Ran(PeerFigures),
    Skipped(String),
}

impl PeerOutcome {
    pub fn figures(&self) -> Option<&PeerFigures> {
        match self {
            PeerOutcome::Ran(f) => Some(f),
            PeerOutcome::Skipped(_) => None,
        }
    }
}

/// Runs `<dir>/run <args>`, its stderr into `log`.
pub async fn run(
    dir: &Path,
    args: &[String],
    log: &Path,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> PeerOutcome {
    let runner = dir.join("run");
    if !runner.is_file() {
        return PeerOutcome::Skipped(format!("{} not present", runner.display()));
    }
    let name = args.first().cloned().unwrap_or_default();
    let stderr = match std::fs::File::create(log) {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    };
    let child = tokio::process::Command::new(&runner)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return PeerOutcome::Skipped(format!("cannot start {}: {e}", runner.display())),
    };
    let output = tokio::select! {
        out = tokio::time::timeout(timeout, child.wait_with_output()) => out,
        _ = shutdown.cancelled() => return PeerOutcome::Skipped("interrupted".into()),
    };
    let output = match output {
        Err(_) => {
            return PeerOutcome::Skipped(format!(
                "{name} did not finish within {} s (log: {})",
                timeout.as_secs(),
                log.display()
            ))
        }
        Ok(Err(e)) => return PeerOutcome::Skipped(format!("{name}: {e}")),
        Ok(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let err = std::fs::read_to_string(log).unwrap_or_default();
        return PeerOutcome::Skipped(format!(
            "{name} failed ({}): {}",
            output.status,
            crate::stack::tail_lines(&err, 3).replace('\n', " | ")
        ));
    }
    match parse(
        stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(""),
    ) {
        Ok(f) => PeerOutcome::Ran(f),
        Err(e) => PeerOutcome::Skipped(format!("{name} printed no figures: {e}")),
    }
}

/// The runner's last line.
pub fn parse(line: &str) -> Result<PeerFigures, String> {
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let need = |k: &str| num(k).ok_or_else(|| format!("no number {k:?} in {line}"));
    let records = need("records")?;
    let seconds = need("seconds")?;
    let rate = need("records_per_s")?;
    if records <= 0.0 || seconds <= 0.0 || rate <= 0.0 {
        return Err(format!("no work measured: {line}"));
    }
    Ok(PeerFigures {
        peer: v
            .get("peer")
            .and_then(|p| p.as_str())
            .unwrap_or("?")
            .to_string(),
        records: records as u64,
        seconds,
        records_per_s: rate,
        startup_seconds: num("startup_seconds"),
        peak_rss_kb: num("peak_rss_kb").map(|k| k as u64),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_last_line_and_refuses_empty_figures() {
        let f = super::parse(
            r#"{"peer":"debezium","records":1000000,"seconds":20.5,"records_per_s":48780.5,"startup_seconds":6.1,"peak_rss_kb":812000}"#,
        )
        .unwrap();
        assert_eq!(f.records, 1_000_000);
        assert_eq!(f.peak_rss_kb, Some(812_000));
        assert!(super::parse(r#"{"peer":"x","records":0,"seconds":1,"records_per_s":0}"#).is_err());
        assert!(super::parse("done").is_err());
    }
}
