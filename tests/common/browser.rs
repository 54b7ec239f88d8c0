//! Browser tests' plumbing: a script of tests/browser/ run by node against headless Chromium
//! (puppeteer-core), read line by line as it reports what the page did. Screenshots go to
//! target/screenshots/, where CI keeps them as artifacts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where a test's screenshot `name` (without extension) goes; any older one is removed.
pub fn screenshot(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    path
}

/// Fails (never skips) when the browser or the scripts' packages are missing.
pub fn require_browser() {
    let missing: Vec<String> = [
        (chromium(), "chromium"),
        (
            browser_dir().join("node_modules/puppeteer-core/package.json"),
            "tests/browser/node_modules (npm ci)",
        ),
        (
            browser_dir().join("node_modules/axe-core/axe.min.js"),
            "axe-core in tests/browser/node_modules (npm ci)",
        ),
    ]
    .into_iter()
    .filter(|(path, _)| !path.exists())
    .map(|(path, what)| format!("{what} at {}", path.display()))
    .collect();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        missing.is_empty() && node,
        "the browser test needs node, chromium, puppeteer-core and axe-core; missing: \
         {missing:?}{}; run scripts/install-deps",
        if node { "" } else { ", node" }
    );
}

/// A running script of tests/browser/.
pub struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Script {
    /// Starts `node tests/browser/<name> <args...>` (after [`require_browser`]).
    pub fn start(name: &str, args: &[&str]) -> Script {
        require_browser();
        let mut child = tokio::process::Command::new("node")
            .arg(browser_dir().join(name))
            .args(args)
            .env("CHROMIUM", chromium())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Script { child, lines }
    }

    /// The script's next line of output, waiting at most `secs`.
    pub async fn next_line(&mut self, secs: u64) -> String {
        tokio::time::timeout(Duration::from_secs(secs), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser script printed nothing within {secs} s"))
            .expect("read the browser script's output")
            .expect("the browser script ended early (its error is above)")
    }

    /// Waits for the script to end, and fails unless it succeeded.
    pub async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the browser script ends")
            .unwrap();
        assert!(status.success(), "the browser script failed: {status}");
    }
}
