//! A role's own settings (`ALTER ROLE ... SET`) change neither a value's text nor how long
//! the pipeline's sessions live: every session starts with `db::TEXT_OUTPUT_SETTINGS`. The test
//! sets them on a role it creates for itself (so other tests on the shared cluster are not
//! affected), runs cdc as that role, snapshots one row and streams another with bytea,
//! interval, float, money and timestamptz values, and checks their Avro values on the topic
//! and that cdc never restarted.

mod common;

use std::time::Duration;

use apache_avro::types::Value;
use common::pipeline::Pipeline;
use rdkafka::Message;
use reviewflow::avro::wire;
use reviewflow::registry::Registry;

/// The settings a role might carry that would print values otherwise, or end sessions.
const ROLE_SETTINGS: &[(&str, &str)] = &[
    ("statement_timeout", "1ms"),
    ("idle_in_transaction_session_timeout", "1ms"),
    ("idle_session_timeout", "1ms"),
    ("lock_timeout", "1ms"),
    ("bytea_output", "escape"),
    ("IntervalStyle", "sql_standard"),
    ("extra_float_digits", "-15"),
    ("DateStyle", "SQL, DMY"),
    ("TimeZone", "America/New_York"),
    // Only C locales are installed here: this checks that the setting is overridden, not
    // that another locale would print money otherwise.
    ("lc_monetary", "C.utf8"),
];

/// A login role with `ROLE_SETTINGS`, dropped (its settings reset) when the test ends.
struct Role {
    name: String,
    owner_url: String,
}

impl Role {
    async fn create(owner_url: &str) -> (Role, String) {
        let name = format!("rf_test_role_{}", common::unique());
        let db = reviewflow::db::connect(owner_url).await.unwrap();
        let mut sql = format!("CREATE ROLE {name} LOGIN SUPERUSER PASSWORD 'role-pw';");
        for (setting, value) in ROLE_SETTINGS {
            sql.push_str(&format!("ALTER ROLE {name} SET {setting} = '{value}';"));
        }
        db.batch_execute(&sql).await.unwrap();
        let (scheme_user, rest) = owner_url.split_once('@').expect("a URL with a user");
        let scheme = scheme_user.split("//").next().unwrap();
        let url = format!("{scheme}//{name}:role-pw@{rest}");
        (
            Role {
                name,
                owner_url: owner_url.into(),
            },
            url,
        )
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.owner_url.clone());
        // Drop runs outside the test's runtime once it has ended.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let db = reviewflow::db::connect(&url).await.unwrap();
                let _ = db
                    .batch_execute(&format!(
                        "ALTER ROLE {name} RESET ALL; \
                         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}';"
                    ))
                    .await;
                for _ in 0..50 {
                    if db
                        .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .join()
        .unwrap();
    }
}

/// The value of `name` in a record, through the unions that make fields nullable.
fn field<'v>(value: &'v Value, name: &str) -> &'v Value {
    match value {
        Value::Union(_, inner) => field(inner, name),
        Value::Record(fields) => fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unwrap(v))
            .unwrap_or_else(|| panic!("no field {name} in {value:?}")),
        other => panic!("not a record: {other:?}"),
    }
}

fn unwrap(value: &Value) -> &Value {
    match value {
        Value::Union(_, inner) => unwrap(inner),
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_settings_change_no_value_and_end_no_session() {
    let mut p = Pipeline::new("role_settings").await;
    let log = std::env::temp_dir().join(format!("rf-role-settings-{}.log", common::unique()));
    p.log = Some(log.clone());
    let db = p.db().await;
    db.batch_execute(
        "ALTER TABLE reviews ADD COLUMN b bytea, ADD COLUMN i interval, ADD COLUMN f float8, \
                             ADD COLUMN m money;
         INSERT INTO reviews (id, course_id, user_id, rating, created_at, b, i, f, m)
         VALUES (1, 1, 1, 4.0, '2024-02-29 13:14:15.123456+00', '\\xdeadbeef',
                 '1 year 2 months 3 days 04:05:06.5', 0.1234567890123, 1234.56)",
    )
    .await
    .unwrap();
    let (role, role_url) = Role::create(&p.url).await;
    let stored: Vec<String> = db
        .query_one(
            "SELECT setconfig FROM pg_db_role_setting WHERE setrole = $1::text::regrole AND setdatabase = 0",
            &[&role.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored.len(),
        ROLE_SETTINGS.len(),
        "the role carries them: {stored:?}"
    );

    let mut cdc = p
        .spawn("cdc", None, &[("DATABASE_URL", role_url.as_str())])
        .take();
    p.wait_for_snapshot().await;
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, created_at, b, i, f, m)
         VALUES (2, 1, 2, 3.5, '0001-01-01 00:00:00+00', '\\x00ff',
                 '-5 days -00:00:01', -2.5e-300, -0.01)",
    )
    .await
    .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;
    // Past the 1 ms idle timeouts many times over: the sessions stay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    db.batch_execute("UPDATE reviews SET f = 1e308 WHERE id = 2")
        .await
        .unwrap();
    common::wait_until_slot_confirms_all(&p.url, &p.slot()).await;

    let registry = Registry::connect(&p.settings).await.unwrap();
    let mut afters = Vec::new();
    for m in common::consume_rows(&p.settings, &p.topic).await {
        let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        afters.push(field(&value, "after").clone());
    }
    assert_eq!(
        afters.len(),
        3,
        "the snapshot's row, the insert, the update"
    );
    let micros = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    };
    let expected = [
        (
            1,
            vec![0xde, 0xad, 0xbe, 0xef],
            "P1Y2M3DT4H5M6.5S",
            0.1234567890123,
            "$1,234.56",
            micros("2024-02-29T13:14:15.123456Z"),
        ),
        (
            2,
            vec![0x00, 0xff],
            "P-5DT-1S",
            -2.5e-300,
            "-$0.01",
            micros("0001-01-01T00:00:00Z"),
        ),
        (
            2,
            vec![0x00, 0xff],
            "P-5DT-1S",
            1e308,
            "-$0.01",
            micros("0001-01-01T00:00:00Z"),
        ),
    ];
    for (after, (id, b, i, f, m, created)) in afters.iter().zip(expected) {
        assert_eq!(field(after, "id"), &Value::Long(id), "{after:?}");
        assert_eq!(
            field(after, "b"),
            &Value::Bytes(b),
            "bytea in hex: {after:?}"
        );
        assert_eq!(
            field(after, "i"),
            &Value::String(i.into()),
            "ISO 8601 interval"
        );
        assert_eq!(
            field(after, "f"),
            &Value::Double(f),
            "every digit of the float"
        );
        assert_eq!(field(after, "m"), &Value::String(m.into()), "money in C");
        let at = match field(after, "created_at") {
            Value::TimestampMicros(t) => *t,
            other => panic!("created_at as timestamp-micros: {other:?}"),
        };
        assert_eq!(at, created, "created_at read in UTC");
    }

    assert!(
        cdc.try_wait().unwrap().is_none(),
        "cdc is still running: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("session failed") && !logged.contains("connection closed"),
        "cdc never restarted and no session of it ended: {logged}"
    );
    let _ = cdc.kill();
    let _ = cdc.wait();
    drop(role);
}
