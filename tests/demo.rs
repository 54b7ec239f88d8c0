//! `reviewflow demo` names its courses, writes reviews at about the rate asked, and stops
//! cleanly, both after --duration and on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

async fn reviews(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM reviews", &[])
        .await
        .unwrap()
        .get(0)
}

async fn demo(url: &str, args: &[&str]) -> tokio::process::Command {
    let settings = common::settings().await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"));
    cmd.arg("demo")
        .args(args)
        .env("DATABASE_URL", url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &settings.kafka.bootstrap_servers)
        .env("RUST_LOG", "reviewflow=info");
    cmd
}

/// "demo wrote N changes: ..." -> N
fn changes(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo wrote "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"))
}

#[tokio::test]
async fn demo_writes_at_the_rate_for_the_duration() {
    let url = common::fresh_database("demo").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    let out = demo(&url, &["--duration", "2", "--rate", "50", "--seed", "7"])
        .await
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = changes(&stdout);
    // 2 s at 50 a second, give or take the first and last tick.
    assert!((80..=101).contains(&written), "{stdout}");
    let rows = reviews(&db).await;
    assert!(rows > 0 && rows as u64 <= written, "{rows} rows");
    let bad: i64 = db
        .query_one(
            "SELECT count(*) FROM reviews WHERE course_id NOT BETWEEN 1 AND 50
               OR created_at > now() OR created_at < now() - interval '121 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0, "courses 1..50, created within the last 120 days");
    let (named, distinct, first): (i64, i64, Option<String>) = {
        let r = db
            .query_one(
                "SELECT count(*), count(DISTINCT title),
                        (SELECT title FROM reviewflow_catalog.courses WHERE id = 1)
                 FROM reviewflow_catalog.courses WHERE id BETWEEN 1 AND 50",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (named, distinct, first.as_deref()),
        (
            50,
            50,
            Some(reviewflow::dev::demo::course_title(1).as_str())
        ),
        "every course named, each differently"
    );
}

#[tokio::test]
async fn demo_stops_on_sigterm() {
    let url = common::fresh_database("demo_sigterm").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    let child = demo(&url, &["--rate", "100"])
        .await
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reviews(&db).await == 0 {
        assert!(Instant::now() < deadline, "the demo wrote nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) with a pid this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("it stops within 10 s")
        .unwrap();
    assert!(out.status.success(), "a SIGTERM is a clean stop");
    assert!(changes(&String::from_utf8_lossy(&out.stdout)) > 0);
}
