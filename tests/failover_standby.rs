//! A real primary failover on a stack with a standby (`stack up --standby`, `stack
//! failover`). Each test runs its own PostgreSQL (a temporary home, its own ports, the version
//! it names) beside the shared Kafka, and purges it at the end, failed or not. The stages get
//! a libpq-style multi-host URL (`host a,b`, `target_session_attrs=read-write`), so after the
//! failover they reach the promoted standby without being restarted.
//!
//! The tests run one at a time (`SERIAL`): each one's PostgreSQL pair and pipeline are
//! enough load for this machine.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pipeline::Pipeline;
use common::Running;
use reviewflow::stack::StackConfig;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A PostgreSQL of its own with a standby; `stack down --purge` and its folder deleted when
/// dropped.
struct TempStack {
    cfg: StackConfig,
    home: PathBuf,
    /// The primary's URL of the `reviewflow` database, before any failover.
    url: String,
}

impl TempStack {
    /// `pg_port` and the standby's (the next one) lie below Linux's ephemeral range
    /// (32768-60999): a port there can be held for a moment by any outgoing connection on
    /// the machine, and the stack refuses a taken port (it did: "port 54382 is taken").
    async fn up(version: u8, pg_port: u16) -> TempStack {
        let home = std::env::temp_dir().join(format!("rf-standby-{}", common::unique()));
        let cfg = StackConfig {
            home_dir: Some(home.clone()),
            pg_port,
            pg_version: version,
            standby: true,
            ..StackConfig::default()
        };
        let mut stack = TempStack {
            cfg,
            home,
            url: String::new(),
        };
        stack.url = reviewflow::stack::up_postgres(&stack.cfg)
            .await
            .expect("PostgreSQL and its standby start");
        stack
    }

    fn standby_port(&self) -> u16 {
        reviewflow::stack::standby_port(&self.cfg)
    }

    /// `reviewflow stack <args>` on this stack.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(env!("CARGO_BIN_EXE_reviewflow"))
            .arg("stack")
            .args(args)
            .env("REVIEWFLOW_HOME", &self.home)
            .env("REVIEWFLOW_PG_PORT", self.cfg.pg_port.to_string())
            .env("REVIEWFLOW_PG_VERSION", self.cfg.pg_version.to_string())
            // No Kafka in this home: a port nobody uses.
            .env(
                "REVIEWFLOW_KAFKA_PORT",
                (self.cfg.pg_port - 30000).to_string(),
            )
            .env_remove("REVIEWFLOW_PG_STANDBY")
            .output()
            .expect("reviewflow stack runs");
        out
    }

    /// The URL of `db` on this cluster: `url` with another database.
    fn url_of(&self, db: &str) -> String {
        let (base, _) = self.url.rsplit_once('/').unwrap();
        format!("{base}/{db}")
    }

    /// Both nodes, libpq style: whichever is the writable primary. The standby comes first,
    /// so every client must pass it over while it is one.
    fn both_url(&self, db: &str) -> String {
        let one = format!("127.0.0.1:{}", self.cfg.pg_port);
        let both = format!("127.0.0.1:{},{one}", self.standby_port());
        format!(
            "{}?target_session_attrs=read-write",
            self.url_of(db).replace(&one, &both)
        )
    }

    fn standby_url(&self, db: &str) -> String {
        self.url_of(db).replace(
            &format!(":{}/", self.cfg.pg_port),
            &format!(":{}/", self.standby_port()),
        )
    }

    /// A pipeline on a fresh database of this cluster (and the shared Kafka), whose stages
    /// log to a file of their own.
    async fn pipeline(&self, name: &str) -> Pipeline {
        let admin = reviewflow::db::connect(&self.url_of("postgres"))
            .await
            .unwrap();
        let db = format!("rf_test_{name}");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        reviewflow::db::migrate(&self.url_of(&db)).await.unwrap();
        let mut settings = common::settings().await;
        let url = self.both_url(&db);
        settings.database_url = url.clone();
        Pipeline {
            name: name.into(),
            url,
            topic: format!("test.{name}.{}.changes", common::unique()),
            settings,
            log: Some(self.home.join("stages.log")),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("stages.log")).unwrap_or_default()
    }

    fn failover(&self) {
        let out = self.cli(&["failover"]);
        assert!(
            out.status.success(),
            "stack failover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TempStack {
    fn drop(&mut self) {
        let out = self.cli(&["down", "--purge"]);
        if !out.status.success() {
            eprintln!(
                "stack down --purge of {}: {}",
                self.home.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Writes random transactions against `url` until `stop`, counting those committed in
/// `done`; a transaction that fails while the primary is gone is given up and the writer
/// reconnects (whether its commit survived is for the pipeline's figures to show).
fn writer(
    url: String,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = common::Rng(23);
        let mut db = None;
        while !stop.load(Ordering::SeqCst) {
            if db.is_none() {
                db = reviewflow::db::connect(&url).await.ok();
                if db.is_none() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let n = 1 + rng.next(3);
            let sql: Vec<String> = (0..n).map(|_| common::statement(&mut rng)).collect();
            let client = db.as_ref().unwrap();
            match client
                .batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
                .await
            {
                Ok(()) => drop(done.fetch_add(1, Ordering::SeqCst)),
                Err(_) => db = None,
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// What the API answered while `stop` was unset: POST /reviews every 20 ms, each answer's
/// status and whether a 503 carried Retry-After.
fn poster(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u16, bool)>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut answers = Vec::new();
        let mut i = 0i64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let review = serde_json::json!({
                "course_id": 1 + i % 4,
                "user_id": 5000 + i,
                "rating": 0.5 * (1 + i % 10) as f64,
                "content": format!("posted across the failover {i}"),
            });
            if let Ok(answer) = http
                .post(format!("{base}/reviews"))
                .json(&review)
                .send()
                .await
            {
                let retry = answer.headers().contains_key("retry-after");
                answers.push((answer.status().as_u16(), retry));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers
    })
}

async fn until_written(done: &AtomicUsize, n: usize) {
    common::eventually("the writer commits", 120, || async {
        done.load(Ordering::SeqCst) >= n
    })
    .await;
}

/// The snapshot marks (a TRUNCATE and an end per partition) on the changes topic: a new
/// snapshot would add more.
async fn snapshot_marks(p: &Pipeline) -> usize {
    p.marked_events()
        .await
        .iter()
        .filter(|(_, _, e)| e.is_snapshot_mark())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_17_cdc_follows_the_promoted_standby_without_a_new_snapshot() {
    let _serial = SERIAL.lock().await;
    let stack = TempStack::up(17, 31381).await;
    let p = stack.pipeline("standby_follow").await;
    let _stages: Vec<Running> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let _cdc = p.spawn_cdc(None);
    // The website's write path, on the same multi-host URL.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _api = p.spawn("api", None, &[("API_LISTEN", listen.as_str())]);
    let base = format!("http://{listen}");
    common::eventually("the api answers", 60, || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    let (done, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let writes = writer(p.url.clone(), done.clone(), stop.clone());
    let posts = poster(base.clone(), stop.clone());
    until_written(&done, 60).await;
    p.wait_for_snapshot().await;
    // The failover slot must be synchronized to the standby (and persisted there: a slot
    // still being synchronized is dropped at promotion) before the primary dies.
    let standby = reviewflow::db::connect(&stack.standby_url(&format!("rf_test_{}", p.name)))
        .await
        .unwrap();
    common::eventually("the slot is synchronized to the standby", 120, || async {
        standby
            .query_opt(
                "SELECT 1 FROM pg_replication_slots
                 WHERE slot_name = $1 AND synced AND NOT temporary",
                &[&p.slot()],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    drop(standby);
    let marks = snapshot_marks(&p).await;
    until_written(&done, 150).await;

    stack.failover();
    let status = String::from_utf8_lossy(&stack.cli(&["status"]).stdout).into_owned();
    assert!(
        status.contains(&format!("127.0.0.1:{}", stack.standby_port()))
            && status.contains("promoted"),
        "stack status names the promoted standby as the primary: {status}"
    );
    // Committed from here on: on the new primary, the old one being dead.
    let at_failover = done.load(Ordering::SeqCst);
    until_written(&done, at_failover + 150).await;
    stop.store(true, Ordering::SeqCst);
    writes.await.unwrap();
    let answers = posts.await.unwrap();
    // Through the switch the API answered 201, or 503 with Retry-After: never a 500.
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(status, retry)| !(*status == 201 || (*status == 503 && *retry)))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than 201 or 503 with Retry-After: {wrong:?}"
    );
    let after_switch = answers
        .iter()
        .rev()
        .take(20)
        .filter(|(s, _)| *s == 201)
        .count();
    assert!(
        after_switch > 0,
        "the API writes to the new primary: its last answers {:?}",
        &answers[answers.len().saturating_sub(20)..]
    );
    eprintln!(
        "api across the failover: {} answers, {} of them 503",
        answers.len(),
        answers.iter().filter(|(s, _)| *s == 503).count()
    );
    let new_primary = reviewflow::db::connect(&p.url).await.unwrap();
    let in_recovery: bool = new_primary
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!in_recovery, "the multi-host URL reaches the new primary");

    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let log = stack.log();
    assert!(
        log.contains("followed a failover"),
        "cdc logged that it followed the failover: {log}"
    );
    assert!(!log.contains("taking a new snapshot"), "{log}");
    assert_eq!(snapshot_marks(&p).await, marks, "no new snapshot was taken");
    let marker = p.snapshot_marker().await;
    assert_eq!(
        marker.server.map(|s| s.timeline),
        Some(2),
        "the marker records the new timeline"
    );

    // The next `stack up` after a stop starts the promoted node as the primary, and never
    // the old one: it would be a second primary on the old timeline.
    drop(_stages);
    drop(_cdc);
    let down = stack.cli(&["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let url = reviewflow::stack::up_postgres(&stack.cfg).await.unwrap();
    assert!(
        url.contains(&format!(":{}/", stack.standby_port())),
        "{url}"
    );
    let primary = reviewflow::db::connect(&url).await.unwrap();
    let in_recovery: bool = primary
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!in_recovery);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", stack.cfg.pg_port)).is_err(),
        "the old primary stays down"
    );
}

/// A promotion whose server has no synchronized slot (before 17, or a standby that does not
/// synchronize slots): the running cdc stops by itself naming `--new-snapshot`, never
/// resuming on another slot, and `--new-snapshot` makes the figures exact.
async fn unsynced_promotion_stops_cdc(version: u8, port: u16, name: &str, unsync: bool) {
    let _serial = SERIAL.lock().await;
    let stack = TempStack::up(version, port).await;
    if unsync {
        let standby = reviewflow::db::connect(&stack.standby_url("reviewflow"))
            .await
            .unwrap();
        for sql in [
            "ALTER SYSTEM SET sync_replication_slots = off",
            "SELECT pg_reload_conf()",
        ] {
            standby.batch_execute(sql).await.unwrap();
        }
    }
    let p = stack.pipeline(name).await;
    let _stages: Vec<Running> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let cdc = p.spawn_cdc(None);
    let db = p.db().await;
    let mut rng = common::Rng(5);
    common::write_random(&db, &mut rng, 40).await;
    p.wait_until_caught_up().await;
    common::write_random(&db, &mut rng, 20).await;
    drop(db);

    stack.failover();
    // The running cdc loses its server, reconnects to the promoted one, finds no slot there
    // and stops by itself: no silent resume on another slot.
    let mut child = cdc.take();
    let status = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("cdc stops within two minutes of the failover");
    assert!(!status.success());
    let log = stack.log();
    for said in ["promoted standby", "--new-snapshot"] {
        assert!(log.contains(said), "cdc's stop names {said:?}: {log}");
    }
    let db = p.db().await;
    common::write_random(&db, &mut rng, 20).await;
    let mut cmd = p.command("cdc");
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(stack.home.join("stages.log"))
        .unwrap();
    cmd.arg("--new-snapshot")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let restated = Running(Some(cmd.spawn().unwrap()));
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    p.stop(restated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_16_a_promoted_standby_stops_cdc_naming_new_snapshot_which_makes_it_exact() {
    unsynced_promotion_stops_cdc(16, 31383, "standby_16", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_17_a_standby_that_did_not_sync_the_slot_stops_cdc_naming_new_snapshot() {
    unsynced_promotion_stops_cdc(17, 31389, "standby_17_unsynced", true).await;
}

/// `stack up --standby` makes the standby by a base backup and it replays what the primary
/// writes afterwards.
async fn base_backup_replays(version: u8, port: u16) {
    let _serial = SERIAL.lock().await;
    let stack = TempStack::up(version, port).await;
    let primary = reviewflow::db::connect(&stack.url).await.unwrap();
    primary
        .batch_execute("CREATE TABLE after_backup (n int); INSERT INTO after_backup VALUES (7)")
        .await
        .unwrap();
    let standby = reviewflow::db::connect(&stack.standby_url("reviewflow"))
        .await
        .unwrap();
    let recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recovery, "the standby is a standby");
    // Synchronous commit waited for the standby's flush, not its replay: read it eventually.
    common::eventually(
        "the standby replays the row written after the backup",
        30,
        || async {
            standby
                .query_opt("SELECT n FROM after_backup", &[])
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.get::<_, i32>(0) == 7)
        },
    )
    .await;
    let status = String::from_utf8_lossy(&stack.cli(&["status"]).stdout).into_owned();
    assert!(
        status.contains("standby") && status.contains(&stack.standby_port().to_string()),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_of_postgres_15_is_made_by_a_base_backup_and_replays() {
    base_backup_replays(15, 31385).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_of_postgres_18_is_made_by_a_base_backup_and_replays() {
    base_backup_replays(18, 31387).await;
}
