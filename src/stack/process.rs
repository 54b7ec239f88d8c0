//! Child processes of the local stack: running tools, recognising our own daemons by their
//! command line, stopping them, and waiting for their ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::error::{Error, Result};

/// The account PostgreSQL runs as when we are root (it refuses to run as root).
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `postgres` when it exists (Debian's server package creates it), else `nobody`.
pub async fn unprivileged_account() -> Result<Account> {
    for name in ["postgres", "nobody"] {
        let uid = Command::new("id").args(["-u", name]).output().await;
        let gid = Command::new("id").args(["-g", name]).output().await;
        if let (Ok(u), Ok(g)) = (uid, gid) {
            let parse = |o: &std::process::Output| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            };
            if let (true, true, Some(uid), Some(gid)) =
                (u.status.success(), g.status.success(), parse(&u), parse(&g))
            {
                return Ok(Account {
                    name: name.to_string(),
                    uid,
                    gid,
                });
            }
        }
    }
    Err(Error::Stack(
        "running as root, and neither a `postgres` nor a `nobody` account exists to run \
         PostgreSQL as; create one (useradd postgres) or run as an ordinary user"
            .into(),
    ))
}

/// Whether `account` may enter `dir` (root's home, say, is closed to it).
pub async fn reachable(dir: &std::path::Path, account: &Account) -> bool {
    let mut probe = Command::new("test");
    probe.arg("-x").arg(dir).uid(account.uid).gid(account.gid);
    probe.status().await.map(|s| s.success()).unwrap_or(false)
}

/// Runs a tool to completion; a failure carries the tail of what it printed.
pub async fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Command {
            what: what.to_string(),
            detail: format!("could not start it: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Command {
        what: what.to_string(),
        detail: format!("{}: {}", out.status, tail(&format!("{stdout}{stderr}"), 20)),
    })
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn cmdline(pid: i32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

/// SIGTERM, then SIGKILL if it is still there after `grace`.
pub async fn terminate(pid: i32, grace: Duration) {
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if alive(pid) {
        tracing::warn!(pid, "did not stop after SIGTERM; sending SIGKILL");
        signal(pid, libc::SIGKILL);
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we recorded ourselves; failure (already gone) is harmless.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits until `addr` accepts TCP connections; `still_starting` reports a process that died.
pub async fn wait_for_port(
    addr: SocketAddr,
    timeout: Duration,
    still_starting: impl Fn() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        still_starting()?;
        if Instant::now() > deadline {
            return Err(Error::Stack(format!(
                "nothing accepted connections on {addr} after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (up to 30 s) until a killed process is gone.
pub async fn wait_gone(pid: i32) {
    for _ in 0..600 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until nothing listens on `ports`: the kernel lets go of a killed
/// process's listening ports a moment after it is gone.
pub async fn wait_ports_free(ports: &[u16]) {
    for _ in 0..600 {
        if ports.iter().all(|p| port_free(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
