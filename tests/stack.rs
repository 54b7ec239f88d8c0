//! `reviewflow stack` as a user runs it, on a second stack of its own (own folder, own ports),
//! so the shared stack the other tests use is left alone.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

struct Stack {
    home: PathBuf,
}

impl Stack {
    fn run(&self, args: &[&str]) -> (i32, String) {
        common::cluster::run_stack(&self.home, 54339, 19192, args)
    }

    /// Every process of this stack: the broker, the postmaster and the postmaster's children.
    fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Some(pid) = read_pid(&self.home.join("kafka/kafka.pid")) {
            pids.push(pid);
        }
        let cluster =
            std::fs::read_to_string(self.home.join("postgres.location")).unwrap_or_default();
        if let Some(postmaster) = read_pid(&Path::new(cluster.trim()).join("data/postmaster.pid")) {
            pids.push(postmaster);
            pids.extend(
                all_pids()
                    .into_iter()
                    .filter(|p| parent(*p) == Some(postmaster)),
            );
        }
        pids.into_iter().filter(|p| alive(*p)).collect()
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

fn parent(pid: i32) -> Option<i32> {
    stat(pid)?
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    stat(pid)
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn mentions(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

#[tokio::test]
async fn up_env_status_down_leaves_nothing_running() {
    let stack = Stack {
        home: std::env::temp_dir().join(format!("rf-stack-{}", common::unique())),
    };

    let (code, out) = stack.run(&["stack", "status"]);
    assert_eq!(code, 3, "a stack never started reports stopped: {out}");

    let (code, out) = stack.run(&["stack", "up"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("127.0.0.1:54339") && out.contains("127.0.0.1:19192"),
        "{out}"
    );
    let password = std::fs::read_to_string(stack.home.join("postgres.password")).unwrap();
    let password = password.trim();
    assert!(!password.is_empty());
    assert!(
        !out.contains(password),
        "up keeps the password out of its output: {out}"
    );
    let (code, again) = stack.run(&["stack", "up"]);
    assert_eq!(code, 0, "a second up finds it running: {again}");

    let (code, out) = stack.run(&["stack", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&*std::fs::read_to_string(stack.home.join("postgres.password")).unwrap()));

    let (code, env) = stack.run(&["stack", "env"]);
    assert_eq!(code, 0, "{env}");
    let value = |name: &str| {
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("export {name}=")))
            .expect(name);
        line.split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_string()
    };
    let db = reviewflow::db::connect(&value("DATABASE_URL"))
        .await
        .expect("the printed DATABASE_URL works");
    let wal_level: String = db.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    assert_eq!(wal_level, "logical");
    drop(db);
    let kafka = value("KAFKA_BOOTSTRAP_SERVERS");
    let metadata = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| m.brokers().len())
    })
    .await
    .unwrap();
    assert_eq!(
        metadata.expect("the printed KAFKA_BOOTSTRAP_SERVERS works"),
        1
    );

    let before = stack.processes();
    assert!(
        before.len() >= 3,
        "broker, postmaster and its workers are running: {before:?}"
    );

    let (code, out) = stack.run(&["stack", "down"]);
    assert_eq!(code, 0, "{out}");
    let left: Vec<i32> = before.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
    let home = stack.home.to_string_lossy().into_owned();
    let strays: Vec<i32> = all_pids()
        .into_iter()
        .filter(|p| alive(*p) && mentions(*p, &home))
        .collect();
    assert!(
        strays.is_empty(),
        "processes naming the stack folder: {strays:?}"
    );
    let (code, _) = stack.run(&["stack", "status"]);
    assert_eq!(code, 3);
    let (code, out) = stack.run(&["stack", "env"]);
    assert_ne!(code, 0, "env of a stopped stack is an error: {out}");
    assert!(out.contains("stack up"), "and says what to do: {out}");

    let (code, out) = stack.run(&["stack", "down", "--purge"]);
    assert_eq!(code, 0, "{out}");
    let _ = std::fs::remove_dir_all(&stack.home);
}

#[test]
fn a_data_folder_of_another_major_version_is_refused_before_anything_starts() {
    let stack = Stack {
        home: std::env::temp_dir().join(format!("rf-stack-version-{}", common::unique())),
    };
    // What initdb of PostgreSQL 18 leaves: the data folder names its major version.
    let data = stack.home.join("postgres/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "18\n").unwrap();

    let (code, out) = stack.run(&["stack", "up", "--pg-version", "15"]);
    assert_ne!(code, 0, "PostgreSQL 15 must not start on 18's data: {out}");
    assert!(
        out.contains("made by PostgreSQL 18")
            && out.contains("--pg-version 18")
            && out.contains("stack down --purge"),
        "the message names the version and both ways out: {out}"
    );
    assert!(
        stack.processes().is_empty(),
        "nothing was started: {:?}",
        stack.processes()
    );
    assert_eq!(
        std::fs::read_to_string(data.join("PG_VERSION")).unwrap(),
        "18\n",
        "the data is left as it was"
    );
    let _ = std::fs::remove_dir_all(&stack.home);
}
