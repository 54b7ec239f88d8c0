//! The processes a run starts: each pipeline stage as a child of this same binary
//! (`current_exe`), so its own peak RSS and CPU time can be read from /proc, and every child
//! is stopped (SIGTERM, then SIGKILL) when the run ends, fails or is interrupted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::error::{Error, Result};

/// A running stage.
pub struct Stage {
    pub name: String,
    pub pid: i32,
    /// Its `--metrics-listen` address.
    pub metrics: SocketAddr,
    log: PathBuf,
    child: tokio::process::Child,
}

/// Starts `reviewflow <stage>` with `env` on top of ours, named `name` (the stage, or one of
/// its further instances), its log in `dir`.
pub fn start(stage: &str, name: &str, env: &[(String, String)], dir: &Path) -> Result<Stage> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the reviewflow binary", e))?;
    let metrics = free_address()?;
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| Error::io_path("create", &log, e))?;
    let child = tokio::process::Command::new(exe)
        .arg(stage)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("REVIEWFLOW_METRICS_LISTEN", metrics.to_string())
        // Per-role connection strings point at the user's database, not the bench's: the
        // stages fall back to DATABASE_URL (the bench database) without them.
        .env_remove("CDC_DATABASE_URL")
        .env_remove("API_DATABASE_URL")
        .env_remove("WORKER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("REVIEWFLOW_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("start reviewflow {name}"), e))?;
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    tracing::debug!(stage = name, pid, %metrics, "started");
    Ok(Stage {
        name: name.into(),
        pid,
        metrics,
        log,
        child,
    })
}

impl Stage {
    /// An error with the end of its log when it has exited.
    pub fn check(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(&format!("exited early ({status})"))),
            Err(e) => Err(Error::io(format!("watch reviewflow {}", self.name), e)),
        }
    }

    fn failed(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Error::Command {
            what: format!("reviewflow {}", self.name),
            detail: format!(
                "{what}; the end of its log ({}):\n{}",
                self.log.display(),
                crate::stack::tail_lines(&log, 15)
            ),
        }
    }

    /// Peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        peak_rss_kb(self.pid).unwrap_or(0)
    }

    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid).unwrap_or(0.0)
    }

    /// SIGTERM and wait (SIGKILL after 20 s); an unclean exit is an error naming its log.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self.failed(&format!("stopped with {status}"))),
            Ok(Err(e)) => Err(Error::io(format!("wait for reviewflow {}", self.name), e)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(self.failed("did not stop within 20 s of SIGTERM (killed)"))
            }
        }
    }
}

/// A loopback port nobody listens on now.
pub fn free_address() -> Result<SocketAddr> {
    let socket =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("find a free port", e))?;
    socket
        .local_addr()
        .map_err(|e| Error::io("find a free port", e))
}

pub fn peak_rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process (all its threads), in seconds.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_sec())
}

/// CPU seconds of a process and all its children (PostgreSQL's backends are the postmaster's).
pub fn tree_cpu_secs(root: i32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = cpu_secs(root).unwrap_or(0.0);
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if parent(pid) == Some(root) {
            total += cpu_secs(pid).unwrap_or(0.0);
        }
    }
    total
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_memory_and_cpu() {
        let me = std::process::id() as i32;
        assert!(super::peak_rss_kb(me).unwrap() > 0);
        assert!(super::cpu_secs(me).is_some());
    }
}
