//! No value halts the pipeline: a property-based run of the whole `reviewflow run` against
//! a `reviews` table with every CHECK and NOT NULL dropped (the key's primary key stays) and
//! user columns of many built-in types added, written with values drawn from the full range
//! of each type by SQL, and POSTed with extreme bodies to the API. Afterwards, against the
//! table: no stage's session failed, no record went to the dead letters, a canary review
//! posted last reaches course_stats, and `verify` (every current row judged, the figures
//! exact) finds no difference.
//!
//! Seeded: `REVIEWFLOW_SEED` repeats a run, and every assertion prints the seed.
//! `REVIEWFLOW_ANY_VALUE_ROWS` raises the number of statements (default 400).

mod common;

use std::time::Duration;

use common::hostile::{course, quoted, rating, text, timestamp, user_values, COLUMNS};
use common::pipeline::Pipeline;
use common::Rng;
use serde_json::json;

/// One statement of the workload over reviews 1..150.
fn statement(rng: &mut Rng) -> String {
    let id = 1 + rng.next(150);
    match rng.next(10) {
        0..=4 => {
            let names: Vec<String> = COLUMNS.iter().map(|(n, _, _)| quoted(n)).collect();
            format!(
                "INSERT INTO reviews (id, course_id, user_id, rating, title, content, created_at, updated_at, {})
                 VALUES ({id}, {}, {}, {}, {}, {}, {}, {}, {}) ON CONFLICT (id) DO NOTHING",
                names.join(", "),
                course(rng),
                ["NULL", "1", "-7", "9223372036854775807"][rng.next(4) as usize],
                rating(rng),
                text(rng),
                text(rng),
                timestamp(rng),
                timestamp(rng),
                user_values(rng).join(", ")
            )
        }
        5 => format!(
            "UPDATE reviews SET course_id = {} WHERE id = {id}",
            course(rng)
        ),
        6 => format!(
            "UPDATE reviews SET rating = {} WHERE id = {id}",
            rating(rng)
        ),
        7 => format!(
            "UPDATE reviews SET content = {}, created_at = {} WHERE id = {id}",
            text(rng),
            timestamp(rng)
        ),
        8 => {
            let (name, _, values) = COLUMNS[rng.next(COLUMNS.len() as u64) as usize];
            let value = values[rng.next(values.len() as u64) as usize];
            format!(
                "UPDATE reviews SET {} = {value} WHERE id = {id}",
                quoted(name)
            )
        }
        _ => format!("DELETE FROM reviews WHERE id = {id}"),
    }
}

/// Bodies a client might send; each must be answered 201 or 4xx, never 5xx.
fn bodies(rng: &mut Rng) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for created_at in [
        "0000-01-01T00:00:00Z",
        "-5000-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "10000-01-01T00:00:00Z",
        "1970-01-01T00:00:00+14:00",
        "2016-12-31T23:59:60Z",
        "2024-02-30T00:00:00Z",
        "not a date",
        "",
    ] {
        out.push(json!({"course_id": 1, "user_id": 1, "rating": 4.5, "created_at": created_at}));
    }
    for rating in [
        json!(0),
        json!(1e308),
        json!(-0.5),
        json!(4.5000000001),
        json!("NaN"),
    ] {
        out.push(json!({"course_id": 2, "user_id": 2, "rating": rating}));
    }
    for id in [
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1.5),
    ] {
        out.push(json!({"course_id": id, "user_id": id, "rating": 3.0}));
    }
    for _ in 0..20 {
        let title = ["", "\u{0}", "a\u{10FFFF}b", "🦀"][rng.next(4) as usize];
        out.push(json!({
            "course_id": 1 + rng.next(6),
            "user_id": 1 + rng.next(1000),
            "rating": (1 + rng.next(10)) as f64 / 2.0,
            "title": title,
            "content": "x".repeat(rng.next(12_000) as usize),
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_carries_every_value_and_stays_exact() {
    let seed: u64 = std::env::var("REVIEWFLOW_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| common::unique() as u64 | 1);
    let statements: usize = std::env::var("REVIEWFLOW_ANY_VALUE_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    println!("any_value: seed {seed} (REVIEWFLOW_SEED={seed} repeats this run)");
    let mut rng = Rng(seed);

    let mut p = Pipeline::new("any_value").await;
    let log = std::env::temp_dir().join(format!("rf-any-value-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    // The reader must never rely on a constraint: every CHECK and NOT NULL goes.
    db.batch_execute(
        "DO $$ DECLARE c record; BEGIN
           FOR c IN SELECT conname FROM pg_constraint
                    WHERE conrelid = 'reviews'::regclass AND contype = 'c' LOOP
             EXECUTE format('ALTER TABLE reviews DROP CONSTRAINT %I', c.conname);
           END LOOP;
         END $$;
         ALTER TABLE reviews ALTER COLUMN course_id DROP NOT NULL,
                             ALTER COLUMN user_id DROP NOT NULL,
                             ALTER COLUMN rating DROP NOT NULL,
                             ALTER COLUMN created_at DROP NOT NULL,
                             ALTER COLUMN updated_at DROP NOT NULL;",
    )
    .await
    .unwrap();
    let checks: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'reviews'::regclass AND contype = 'c'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(checks, 0, "every CHECK of reviews is dropped");
    // Half the user columns before the snapshot, half while streaming.
    let (early, late) = COLUMNS.split_at(COLUMNS.len() / 2);
    let add = |cols: &[(&str, &str, &[&str])]| {
        cols.iter()
            .map(|(n, t, _)| format!("ALTER TABLE reviews ADD COLUMN {} {t};", quoted(n)))
            .collect::<String>()
    };
    db.batch_execute(&add(early)).await.unwrap();
    // Rows for the snapshot: the contract columns only, extreme values included.
    for _ in 0..40 {
        let id = 1000 + rng.next(1_000_000);
        let sql = format!(
            "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES ({id}, {}, 1, {}, {}, {}) ON CONFLICT (id) DO NOTHING",
            course(&mut rng),
            rating(&mut rng),
            text(&mut rng),
            timestamp(&mut rng)
        );
        let _ = db.batch_execute(&sql).await;
    }

    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let run = p.spawn(
        "run",
        None,
        &[
            ("API_LISTEN", address.as_str()),
            ("REVIEWFLOW_STATS_TOPIC", &p.output("course-stats")),
        ],
    );
    let base = format!("http://{address}");
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;
    db.batch_execute(&add(late)).await.unwrap();

    // The workload: transactions of one to three statements; PostgreSQL itself may refuse a
    // value (say, Infinity in numeric(7,2)), and then the transaction is simply not there.
    let (mut committed, mut refused) = (0, 0);
    for _ in 0..statements / 2 {
        let n = 1 + rng.next(3);
        let sql: Vec<String> = (0..n).map(|_| statement(&mut rng)).collect();
        match db
            .batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
            .await
        {
            Ok(()) => committed += 1,
            Err(_) => {
                refused += 1;
                db.batch_execute("ROLLBACK").await.unwrap();
            }
        }
    }
    assert!(
        committed > statements / 8,
        "seed {seed}: the workload committed ({committed} committed, {refused} refused by PostgreSQL)"
    );

    let http = reqwest::Client::new();
    for body in bodies(&mut rng) {
        let answer = http
            .post(format!("{base}/reviews"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(
            status.is_success() || status.is_client_error(),
            "seed {seed}: {body} was answered {status}: {text}"
        );
        if let Some(created_at) = body["created_at"].as_str() {
            let year_ok = created_at.get(..4).and_then(|y| y.parse::<i32>().ok());
            if status.is_success() {
                assert!(
                    matches!(year_ok, Some(1..=9999)),
                    "seed {seed}: created_at {created_at} was stored"
                );
            } else {
                assert!(
                    text.contains("created_at"),
                    "seed {seed}: the refusal of {created_at} names the field: {text}"
                );
            }
        }
    }
    // A TRUNCATE midway through, then more of everything.
    db.batch_execute("TRUNCATE reviews").await.unwrap();
    for _ in 0..statements / 2 {
        let sql = statement(&mut rng);
        if db.batch_execute(&sql).await.is_err() {
            refused += 1;
        }
    }

    // The canary, posted last: it must reach course_stats.
    let canary_course = 424_242;
    let answer = http
        .post(format!("{base}/reviews"))
        .json(&json!({"course_id": canary_course, "user_id": 1, "rating": 4.0, "content": "canary: clear and useful"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        reqwest::StatusCode::CREATED,
        "seed {seed}: the canary is stored"
    );
    common::eventually(
        &format!("seed {seed}: the canary reaches course_stats"),
        180,
        || async {
            db.query_opt(
                "SELECT 1 FROM course_stats WHERE course_id = $1 AND review_count = 1",
                &[&(canary_course as i64)],
            )
            .await
            .unwrap()
            .is_some()
        },
    )
    .await;
    p.wait_until_caught_up().await;

    if let Err(panic) = tokio::spawn({
        let base = base.clone();
        async move { common::assert_no_session_failed(&base).await }
    })
    .await
    {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let warnings: Vec<&str> = log_text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect();
        panic!("seed {seed}: {panic}\n{}", warnings.join("\n"));
    }
    let rows: i64 = db
        .query_one("SELECT count(*) FROM reviews", &[])
        .await
        .unwrap()
        .get(0);
    println!("any_value: seed {seed}, {committed} transactions committed, {refused} refused by PostgreSQL, {rows} rows at the end");
    p.assert_exact().await;
    p.stop(run).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_file(&log);
}
