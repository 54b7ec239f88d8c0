//! Security through configuration, on the real local stack: least-privilege PostgreSQL roles
//! (the pipeline runs with them; each is refused what it must not do), TLS to PostgreSQL for
//! pooled and replication connections alike, SASL to Kafka (and a clear error for a wrong
//! password), and secrets that never reach a stage's output.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pipeline::Pipeline;
use reviewflow::config::{DbRole, KafkaSettings};
use serde_json::json;

/// `url` with another user and password (the database and host kept).
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (_, host_db) = rest.rsplit_once('@').expect("a URL with a user");
    format!("{scheme}://{user}:{password}@{host_db}")
}

/// Login users of the three groups for this test run (roles belong to the cluster).
async fn logins(url: &str, prefix: &str) -> [(DbRole, String); 3] {
    let admin = reviewflow::db::connect(url).await.unwrap();
    let mut out = Vec::new();
    for role in [DbRole::Cdc, DbRole::Api, DbRole::Worker] {
        let user = format!(
            "{prefix}_{}",
            role.variable().to_lowercase().replace("_database_url", "")
        );
        let password = format!("pw-{}", common::unique());
        reviewflow::db::roles::create_login(&admin, role, &user, &password)
            .await
            .unwrap();
        out.push((role, as_user(url, &user, &password)));
    }
    out.try_into().unwrap()
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The SQLSTATE of a refused statement (None when it succeeded).
async fn refusal(db: &tokio_postgres::Client, sql: &str) -> Option<String> {
    match db.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => Some(
            e.code()
                .map(|c| c.code().to_owned())
                .unwrap_or_else(|| e.to_string()),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_three_least_privilege_roles() {
    let p = Pipeline::new("sec_roles").await;
    let [(_, cdc), (_, api), (_, worker)] = logins(&p.url, "rf_test_sec").await;

    // Each stage gets only its own role's URL: no process but the test holds the owner's.
    let stage = |name: &str, role_var: &str, url: &str| {
        let mut cmd = p.command(name);
        cmd.env_remove("DATABASE_URL")
            .env(role_var, url)
            .stdout(Stdio::null());
        common::Running(Some(cmd.spawn().unwrap()))
    };
    let address = free_address();
    let mut api_cmd = p.command("api");
    api_cmd
        .env_remove("DATABASE_URL")
        .env("API_DATABASE_URL", &api)
        .env("API_LISTEN", &address)
        .stdout(Stdio::null());
    let api_stage = common::Running(Some(api_cmd.spawn().unwrap()));
    let cdc_stage = stage("cdc", "CDC_DATABASE_URL", &cdc);
    let stages = [
        stage("fraud", "WORKER_DATABASE_URL", &worker),
        stage("verdicts", "WORKER_DATABASE_URL", &worker),
        stage("stats", "WORKER_DATABASE_URL", &worker),
    ];

    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;
    for i in 0..30 {
        let review = json!({
            "course_id": 1 + i % 4,
            "user_id": 500 + i,
            "rating": 0.5 * f64::from(1 + i % 10),
            "content": if i == 11 { "buy now at http://spam.example.com".to_string() } else { format!("solid course {i}") },
        });
        let answer = http
            .post(format!("{base}/reviews"))
            .json(&review)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
    }
    // Edits and deletes by the application's role, as a website would make them.
    let app = reviewflow::db::connect(&api).await.unwrap();
    app.batch_execute(
        "UPDATE reviews SET rating = 5.0 WHERE id IN (SELECT id FROM reviews ORDER BY id LIMIT 3);
         DELETE FROM reviews WHERE id = (SELECT max(id) FROM reviews)",
    )
    .await
    .unwrap();

    p.wait_until_caught_up().await;
    let report = reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap();
    assert_eq!(report.courses, 4);
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    let stats: serde_json::Value = http
        .get(format!("{base}/courses/1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["review_count"].as_i64().unwrap() > 0, "{stats}");

    for s in stages {
        p.stop(s).await;
    }
    p.stop(cdc_stage).await;
    p.stop(api_stage).await;
    let db = p.db().await;
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_must_not_do() {
    let p = Pipeline::new("sec_refusals").await;
    let [(_, cdc), (_, api), (_, worker)] = logins(&p.url, "rf_test_sec_refusals").await;
    let owner = p.db().await;
    owner
        .batch_execute(
            "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 1, 4.0);
             INSERT INTO course_stats (course_id, review_count, rating_sum) VALUES (1, 1, 4.0);
             INSERT INTO review_verdicts (review_id, version, verdict, score, model)
                 VALUES (1, '0/1', 'valid', 0, 'm');
             INSERT INTO sink_offsets (consumer, topic, partition, next_offset) VALUES ('stats', 't', 0, 1);",
        )
        .await
        .unwrap();
    let denied = Some("42501".to_string());
    let api_url = api.clone();

    let api = reviewflow::db::connect(&api).await.unwrap();
    for sql in [
        "UPDATE course_stats SET review_count = 99",
        "INSERT INTO course_stats (course_id) VALUES (2)",
        "DELETE FROM course_stats",
        "UPDATE stats_state SET truncated_lsn = 1",
        "UPDATE sink_offsets SET next_offset = 0",
        "INSERT INTO review_verdicts (review_id, version, verdict, score, model) VALUES (1, '0/2', 'fraud', 1, 'm')",
        "DELETE FROM review_verdicts",
        "INSERT INTO review_deletions (review_id, version, position) VALUES (1, '0/2', 0)",
        "UPDATE verdicts_state SET deleted_before_lsn = 'FFFFFFFF/0'",
        "UPDATE course_daily_stats SET review_count = 0",
        "TRUNCATE reviews",
        "SELECT reviewflow_set_clock(now() + interval '1 day')",
    ] {
        assert_eq!(refusal(&api, sql).await, denied, "api: {sql}");
    }
    // What it may do.
    for sql in [
        "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 2, 3.5)",
        "UPDATE reviews SET content = 'edited' WHERE user_id = 2",
        "UPDATE reviews SET moderation = 'fraud' WHERE user_id = 2",
        "SELECT * FROM course_stats",
        "SELECT * FROM review_verdicts",
    ] {
        assert_eq!(refusal(&api, sql).await, None, "api: {sql}");
    }

    let cdc = reviewflow::db::connect(&cdc).await.unwrap();
    for sql in [
        "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 3, 3.5)",
        "UPDATE reviews SET rating = 1.0",
        "DELETE FROM reviews",
        "UPDATE course_stats SET review_count = 99",
        "INSERT INTO sink_offsets (consumer, topic, partition, next_offset) VALUES ('x', 't', 0, 1)",
    ] {
        assert_eq!(refusal(&cdc, sql).await, denied, "cdc: {sql}");
    }
    assert_eq!(
        refusal(&cdc, "SELECT * FROM reviews, course_stats").await,
        None
    );

    let worker = reviewflow::db::connect(&worker).await.unwrap();
    for sql in [
        "INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 4, 3.5)",
        "UPDATE reviews SET rating = 1.0",
        "DELETE FROM reviews",
        // The window's clock is the database's: no stage moves it.
        "SELECT reviewflow_set_clock(now() + interval '1 day')",
        "UPDATE reviewflow_clock SET offset_us = 1",
    ] {
        assert_eq!(refusal(&worker, sql).await, denied, "worker: {sql}");
    }
    // What the verdict sink writes, and the clock the stats worker reads.
    for sql in [
        "SELECT reviewflow_today()",
        "UPDATE course_stats SET review_count = review_count",
        "INSERT INTO review_deletions (review_id, version, position) VALUES (7, '0/2', 0)",
        "UPDATE verdicts_state SET deleted_before_lsn = deleted_before_lsn",
    ] {
        assert_eq!(refusal(&worker, sql).await, None, "worker: {sql}");
    }

    // Nothing a refused statement tried was stored.
    let row = owner
        .query_one(
            "SELECT (SELECT review_count FROM course_stats WHERE course_id = 1),
                    (SELECT count(*) FROM review_verdicts), (SELECT count(*) FROM reviews),
                    (SELECT count(*) FROM review_deletions WHERE review_id = 1),
                    (SELECT deleted_before_lsn::text FROM verdicts_state)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3),
            row.get::<_, String>(4)
        ),
        (1, 1, 2, 0, "0/0".to_string())
    );

    // `demo` (and `import`) write reviews with the api's role; the operator's tools need the
    // owner.
    let demo = p
        .command("demo")
        .env_remove("DATABASE_URL")
        .env("API_DATABASE_URL", &api_url)
        .args(["--duration", "1", "--rate", "20", "--seed", "7"])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let reviews: i64 = owner
        .query_one("SELECT count(*) FROM reviews", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reviews > 2, "demo wrote reviews as the api's role");
    let verify = p
        .command("verify")
        .env_remove("DATABASE_URL")
        .env("API_DATABASE_URL", &api_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !verify.status.success() && text.contains("set DATABASE_URL"),
        "{text}"
    );

    // A stage given only its role's URL does not migrate the schema: on a database nobody
    // migrated it waits and says what to run (tests/first_start.rs: and then starts).
    let (base, _) = p.url.rsplit_once('/').unwrap();
    for sql in [
        "DROP DATABASE IF EXISTS rf_test_sec_unmigrated WITH (FORCE)",
        "CREATE DATABASE rf_test_sec_unmigrated",
    ] {
        owner.batch_execute(sql).await.unwrap();
    }
    let (_, worker_url) = logins(&p.url, "rf_test_sec_refusals").await[2].clone();
    let worker_url = format!(
        "{}/rf_test_sec_unmigrated",
        worker_url.rsplit_once('/').unwrap().0
    );
    let log = std::env::temp_dir().join(format!("rf-sec-unmigrated-{}.log", common::unique()));
    let mut waiting = p.command("verdicts");
    waiting
        .env_remove("DATABASE_URL")
        .env("WORKER_DATABASE_URL", &worker_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut waiting = common::Running(Some(waiting.spawn().unwrap()));
    common::eventually(
        "the stage says it waits for `reviewflow migrate`",
        60,
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("run `reviewflow migrate`")
        },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        waiting.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "it waits, it does not stop: {text}"
    );
    drop(waiting);
    let admin = reviewflow::db::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    admin
        .batch_execute("DROP DATABASE rf_test_sec_unmigrated WITH (FORCE)")
        .await
        .unwrap();
}

/// A private PostgreSQL cluster serving TLS (the stack's `--pg-ssl`), removed when dropped.
struct TlsCluster {
    home: std::path::PathBuf,
    port: u16,
}

impl TlsCluster {
    fn config(&self) -> reviewflow::stack::StackConfig {
        let mut cfg = common::stack_config();
        cfg.home_dir = Some(self.home.clone());
        cfg.pg_port = self.port;
        cfg.pg_ssl = true;
        cfg
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for args in [&["stack", "down"][..], &["stack", "down", "--purge"][..]] {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"))
                .args(args)
                .env("REVIEWFLOW_HOME", &self.home)
                .env("REVIEWFLOW_PG_PORT", self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_encrypts_pooled_and_replication_connections() {
    let shared = common::settings().await;
    let port: u16 = free_address().rsplit(':').next().unwrap().parse().unwrap();
    let cluster = TlsCluster {
        home: std::env::temp_dir().join(format!("rf-pg-tls-{}", std::process::id())),
        port,
    };
    let cfg = cluster.config();
    let url = reviewflow::stack::up_postgres(&cfg)
        .await
        .expect("a TLS cluster starts");
    let root = reviewflow::stack::postgres_certificate(&cfg);
    let require = format!("{url}?sslmode=require");
    reviewflow::db::migrate(&require).await.unwrap();

    let topic = format!("test.sec_tls.{}.changes", common::unique());
    let slot = "rf_sec_tls";
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"));
    cmd.arg("cdc")
        .env("DATABASE_URL", &require)
        .env("KAFKA_BOOTSTRAP_SERVERS", &shared.kafka.bootstrap_servers)
        .env("REVIEWFLOW_CHANGES_TOPIC", &topic)
        .env("REVIEWFLOW_SLOT", slot)
        .env("REVIEWFLOW_STATUS_INTERVAL", "1")
        .env("RUST_LOG", "reviewflow=info")
        .env_remove("SCHEMA_REGISTRY_URL")
        .stdout(Stdio::null());
    let cdc = common::Running(Some(cmd.spawn().unwrap()));
    common::wait_until_slot_exists(&url, slot).await;

    // The observer itself connects in plain text, so it can tell the others apart.
    let observer = reviewflow::db::connect(&format!("{url}?sslmode=disable"))
        .await
        .unwrap();
    observer
        .batch_execute(
            "INSERT INTO reviews (course_id, user_id, rating) VALUES (7, 1, 4.5), (7, 2, 3.0)",
        )
        .await
        .unwrap();
    common::wait_until_slot_confirms_all(&url, slot).await;
    let changes = common::consume_all(&shared.kafka, &topic).await;
    assert!(
        changes.len() >= 2,
        "the changes reached Kafka: {}",
        changes.len()
    );

    let rows = observer
        .query(
            "SELECT a.backend_type, s.ssl, coalesce(s.version, '') FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
               AND a.backend_type IN ('client backend', 'walsender')",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(seen.iter().any(|(t, ..)| t == "walsender"), "{seen:?}");
    assert!(seen.iter().any(|(t, ..)| t == "client backend"), "{seen:?}");
    assert!(
        seen.iter().all(|(_, ssl, v)| *ssl && v.starts_with("TLS")),
        "{seen:?}"
    );
    let (plain,): (bool,) = observer
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map(|r| (r.get(0),))
        .unwrap();
    assert!(!plain, "sslmode=disable stays plain");
    drop(cdc);

    // verify-full checks the certificate and the host name against the root certificate.
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", root.display());
    let pg = reviewflow::db::connect(&verified).await.unwrap();
    let ssl: bool = pg
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    let mut replication =
        reviewflow::source::replication::ReplicationConnection::connect(&verified)
            .await
            .unwrap();
    let system = replication.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(system.len(), 1);
    // The server's certificate names localhost and 127.0.0.1, not db.example (reached here
    // at 127.0.0.1 through hostaddr).
    let password = url
        .split_once("://")
        .unwrap()
        .1
        .split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap()
        .1;
    let wrong_host = format!(
        "host=db.example hostaddr=127.0.0.1 port={port} user=reviewflow password={password} \
         dbname=reviewflow sslmode=verify-full sslrootcert={}",
        root.display()
    );
    let e = reviewflow::error::causes(
        &reviewflow::db::connect(&wrong_host)
            .await
            .expect_err("refused"),
    );
    assert!(
        e.contains("certificate verify failed") && !e.contains(password),
        "{e}"
    );
    let e = reviewflow::source::replication::ReplicationConnection::connect(&wrong_host)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    // Without the stack's root certificate, the self-signed certificate is not trusted.
    let untrusted = format!("{url}?sslmode=verify-ca");
    assert!(
        reviewflow::source::replication::ReplicationConnection::connect(&untrusted)
            .await
            .is_err()
    );
    assert!(reviewflow::db::connect(&untrusted).await.is_err());

    // sslmode=require never falls back to plain text: the shared stack serves no TLS.
    let e = reviewflow::source::replication::ReplicationConnection::connect(&format!(
        "{}?sslmode=require",
        shared.database_url
    ))
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("does not accept TLS"), "{e}");
    assert!(
        reviewflow::db::connect(&format!("{}?sslmode=require", shared.database_url))
            .await
            .is_err()
    );

    observer
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    drop(cluster);
}

fn sasl_settings(cfg: &reviewflow::stack::StackConfig, password: Option<&str>) -> KafkaSettings {
    let (address, user, right) = reviewflow::stack::kafka_sasl(cfg).expect("the SASL listener");
    KafkaSettings {
        bootstrap_servers: address,
        client: vec![
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
            ("sasl.username".into(), user),
            (
                "sasl.password".into(),
                password.unwrap_or(&right).to_owned(),
            ),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_sasl_round_trip_and_a_clear_error_for_a_wrong_password() {
    let cfg = common::stack_config();
    let mut p = Pipeline::new("sec_sasl").await;
    p.settings.kafka = sasl_settings(&cfg, None);
    let (_, _, password) = reviewflow::stack::kafka_sasl(&cfg).unwrap();
    // The settings from a properties file, the password from the environment.
    let properties =
        std::env::temp_dir().join(format!("rf-sasl-{}.properties", std::process::id()));
    std::fs::write(
        &properties,
        "# the stack's SASL listener\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=reviewflow\n",
    )
    .unwrap();
    let sasl_stage = |name: &str, password: &str| {
        let mut cmd = p.command(name);
        cmd.env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &p.settings.kafka.bootstrap_servers,
        )
        .env("REVIEWFLOW_KAFKA_PROPERTIES", &properties)
        .env("KAFKA_SASL_PASSWORD", password)
        .stdout(Stdio::null());
        cmd
    };

    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating) VALUES (3, 1, 4.0), (3, 2, 2.5)",
    )
    .await
    .unwrap();
    let cdc = common::Running(Some(
        sasl_stage("cdc", &password)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    // Read back through the SASL listener too.
    p.wait_for_snapshot().await;
    db.batch_execute("UPDATE reviews SET rating = 5.0 WHERE user_id = 1")
        .await
        .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let events = p.events().await;
    assert_eq!(events.len(), 3, "two snapshot reads and one update");
    p.stop(cdc).await;

    // A wrong password: a prompt error naming what to check, and no secret in it.
    let started = Instant::now();
    let out = sasl_stage("cdc", "not-the-password-42").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("Authentication failed") && text.contains("sasl.password"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-password-42") && !text.contains(&password),
        "{text}"
    );
    let _ = std::fs::remove_file(&properties);
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_a_stages_output() {
    let p = Pipeline::new("sec_redact").await;
    let owner_password = p
        .url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .expect("the stack's URL has a password");
    let [(_, cdc), (_, api), (_, worker)] = logins(&p.url, "rf_test_sec_redact").await;
    let role_passwords: Vec<String> = [&cdc, &api, &worker]
        .iter()
        .map(|u| {
            u.split_once("://")
                .unwrap()
                .1
                .split_once('@')
                .unwrap()
                .0
                .split_once(':')
                .unwrap()
                .1
                .to_owned()
        })
        .collect();
    let token = "api-token-7f3a9c1e";
    let (kafka_secret, key_secret) = ("sasl-secret-5d2b", "key-secret-8e4f");
    let address = free_address();
    let mut cmd = p.command("run");
    cmd.env("RUST_LOG", "debug")
        .env("API_LISTEN", &address)
        .env("API_TOKEN", token)
        .env("CDC_DATABASE_URL", &cdc)
        .env("API_DATABASE_URL", &api)
        .env("WORKER_DATABASE_URL", &worker)
        .env("REVIEWFLOW_STATS_TOPIC", "")
        .env("KAFKA_SASL_PASSWORD", kafka_secret)
        .args(["--kafka-option", &format!("ssl.key.password={key_secret}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Drain both pipes while the pipeline runs.
    let drain = |pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut pipe = pipe;
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let running = common::Running(Some(child));

    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    common::wait_healthy(&base, 120).await;
    p.wait_for_snapshot().await;
    for i in 0..5 {
        let answer = http
            .post(format!("{base}/reviews"))
            .bearer_auth(token)
            .json(&json!({"course_id": 9, "user_id": 1 + i, "rating": 4.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
    }
    let refused = http
        .post(format!("{base}/reviews"))
        .bearer_auth("wrong-token")
        .json(&json!({"course_id": 9, "user_id": 99, "rating": 4.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    p.wait_until_caught_up().await;
    let report = reviewflow::tools::verify::verify(&p.db().await)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    p.stop(running).await;
    let output = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(
        output.contains("kafka client setting"),
        "debug logs were on"
    );

    // A failing start shows the connection string's place, not its password.
    let bad = p
        .command("api")
        .env(
            "DATABASE_URL",
            as_user(&p.url, "reviewflow", "wrong-owner-pw-31"),
        )
        .env("API_TOKEN", token)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let failed = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        failed.contains("password authentication failed"),
        "{failed}"
    );

    let mut secrets = vec![owner_password.as_str(), token, kafka_secret, key_secret];
    secrets.extend(role_passwords.iter().map(String::as_str));
    for secret in &secrets {
        assert!(
            !output.contains(secret),
            "{secret} in the output of run:\n{output}"
        );
    }
    for secret in ["wrong-owner-pw-31", token] {
        assert!(!failed.contains(secret), "{secret} in:\n{failed}");
    }
    p.db()
        .await
        .execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_roles_makes_one_login_per_group_and_keeps_it() {
    common::settings().await;
    let roles = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reviewflow"))
            .args(["stack", "roles"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = roles();
    assert_eq!(
        first,
        roles(),
        "a second call keeps the users and passwords"
    );
    let urls: std::collections::BTreeMap<String, String> = first
        .lines()
        .map(|l| {
            let (name, value) = l.strip_prefix("export ").unwrap().split_once('=').unwrap();
            (name.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect();
    for (variable, group, replication) in [
        ("CDC_DATABASE_URL", "reviewflow_cdc", true),
        ("API_DATABASE_URL", "reviewflow_api", false),
        ("WORKER_DATABASE_URL", "reviewflow_worker", false),
    ] {
        let db = reviewflow::db::connect(&urls[variable]).await.unwrap();
        let row = db
            .query_one(
                "SELECT pg_has_role(current_user, $1, 'member'), rolreplication, rolsuper
                 FROM pg_roles WHERE rolname = current_user",
                &[&group],
            )
            .await
            .unwrap();
        let (member, repl, superuser): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(member && !superuser, "{variable}");
        assert_eq!(repl, replication, "{variable}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_sasl_ssl_round_trip_and_an_untrusted_broker_refused() {
    let cfg = common::stack_config();
    let (address, ca) = reviewflow::stack::kafka_sasl_ssl(&cfg).expect("the SASL_SSL listener");
    let mut p = Pipeline::new("sec_sasl_ssl").await;
    let mut kafka = sasl_settings(&cfg, None);
    kafka.bootstrap_servers = address;
    kafka.client[0].1 = "SASL_SSL".into();
    kafka
        .client
        .push(("ssl.ca.location".into(), ca.display().to_string()));
    p.settings.kafka = kafka;
    let password = p
        .settings
        .kafka
        .setting("sasl.password")
        .unwrap()
        .to_owned();
    // Everything by --kafka-option this time, the password from the environment.
    let stage = |trust: bool| {
        let mut cmd = p.command("cdc");
        cmd.env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &p.settings.kafka.bootstrap_servers,
        )
        .env("KAFKA_SASL_PASSWORD", &password)
        .stdout(Stdio::null());
        for (key, value) in &p.settings.kafka.client {
            if key != "sasl.password" && (trust || key != "ssl.ca.location") {
                cmd.args(["--kafka-option", &format!("{key}={value}")]);
            }
        }
        cmd
    };

    let db = p.db().await;
    db.batch_execute("INSERT INTO reviews (course_id, user_id, rating) VALUES (4, 1, 1.5)")
        .await
        .unwrap();
    let cdc = common::Running(Some(stage(true).stderr(Stdio::null()).spawn().unwrap()));
    p.wait_for_snapshot().await;
    db.batch_execute("DELETE FROM reviews").await.unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    let events = p.events().await;
    assert_eq!(
        events.len(),
        2,
        "a snapshot read and a delete, read back over TLS"
    );
    p.stop(cdc).await;

    // Without the root certificate the broker's self-signed one is not trusted.
    let started = Instant::now();
    let out = stage(false).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("refused the connection") && text.contains("certificate"),
        "{text}"
    );
    assert!(!text.contains(&password), "{text}");
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}
