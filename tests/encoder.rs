//! The change encoder writes the Avro body straight from pgoutput's text values; the generic
//! value tree it replaced is kept as the reference (`RowSchema::encode_within_by_value_tree`).
//! Differential test: rows of the hostile values (tests/common/hostile.rs, the values
//! tests/any_value.rs runs the whole pipeline on) are written into a table shaped like
//! `reviews` with every constraint dropped and the user columns added, read back as the text
//! PostgreSQL prints them under the pipeline's session settings, and encoded both ways, as
//! inserts, updates and deletes, whole and under size limits that turn values into oversize
//! markers. The bytes must be identical, and decode to the same change.

mod common;

use common::hostile::{course, quoted, rating, text, timestamp, user_values, COLUMNS};
use common::Rng;
use reviewflow::avro::{decode_change, Cell, ColumnType, RowSchema};
use reviewflow::contract::change::{Op, Source};
use reviewflow::contract::lsn::Lsn;
use tokio_postgres::SimpleQueryMessage;

const ROWS: u64 = 200;

fn cells(row: &[Option<Vec<u8>>]) -> Vec<Cell<'_>> {
    row.iter()
        .map(|v| match v {
            Some(t) => Cell::Text(t),
            None => Cell::Null,
        })
        .collect()
}

/// A table's columns as the catalog describes them, in table order.
async fn columns(db: &tokio_postgres::Client, table: &str) -> Vec<ColumnType> {
    db.query(
        "SELECT attname::text, atttypid::int8, atttypmod, format_type(atttypid, atttypmod)
         FROM pg_attribute
         WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
         ORDER BY attnum",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| ColumnType {
        name: r.get(0),
        type_oid: r.get::<_, i64>(1) as u32,
        type_modifier: r.get(2),
        pg_type: r.get(3),
    })
    .collect()
}

#[tokio::test]
async fn the_direct_encoder_writes_the_value_trees_bytes_for_every_hostile_value() {
    let url = common::fresh_database("encoder").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    // reviews' own columns and types, without a constraint, then the user columns.
    let contract = columns(&db, "reviews").await;
    let definitions: Vec<String> = contract
        .iter()
        .map(|c| (c.name.as_str(), c.pg_type.as_str()))
        .chain(COLUMNS.iter().map(|(n, t, _)| (*n, *t)))
        .map(|(n, t)| format!("{} {t}", quoted(n)))
        .collect();
    db.batch_execute(&format!(
        "CREATE TABLE hostile ({}); CREATE SEQUENCE hostile_id",
        definitions.join(", ")
    ))
    .await
    .unwrap();

    let mut rng = Rng(0x5eed_0001);
    let user: Vec<String> = COLUMNS.iter().map(|(n, _, _)| quoted(n)).collect();
    // A value this server's version does not take (interval 'infinity' before 17) fails its
    // statement, as in tests/any_value.rs; the rest are the rows.
    for _ in 0..ROWS {
        let _ = db
            .batch_execute(&format!(
                "INSERT INTO hostile (id, course_id, user_id, rating, title, content, created_at,
                                  updated_at, {})
             VALUES (nextval('hostile_id'), {}, {}, {}, {}, {}, {}, {}, {})",
                user.join(", "),
                course(&mut rng),
                ["NULL", "1", "-7", "9223372036854775807"][rng.next(4) as usize],
                rating(&mut rng),
                text(&mut rng),
                text(&mut rng),
                timestamp(&mut rng),
                timestamp(&mut rng),
                user_values(&mut rng).join(", ")
            ))
            .await;
    }

    let columns = columns(&db, "hostile").await;
    let schema = RowSchema::new("public", "reviews", columns.clone()).unwrap();

    // The text forms, as the replication stream carries them (the pipeline's settings).
    let rows: Vec<Vec<Option<Vec<u8>>>> = db
        .simple_query("SELECT * FROM hostile ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).map(|s| s.as_bytes().to_vec()))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert!(
        rows.len() as u64 > ROWS / 2,
        "{} of {ROWS} rows were written",
        rows.len()
    );

    let (mut compared, mut with_markers) = (0, 0);
    for (i, pair) in rows.windows(2).enumerate() {
        let (before, after) = (cells(&pair[0]), cells(&pair[1]));
        let source = Source {
            schema: "public".into(),
            table: "reviews".into(),
            lsn: Lsn(0x1_0000_0000 + i as u64 * 977),
            position: [0, 3, -1, -2_000_003, i64::MAX][i % 5],
            txid: [None, Some(771), Some(i64::MAX)][i % 3],
            commit_time: chrono::DateTime::from_timestamp_micros(
                [0, -62_135_596_800_000_000, 1_795_581_617_993_809][i % 3],
            )
            .unwrap(),
            snapshot: i % 2 == 0,
        };
        let images = [
            (Op::Create, None, Some(&after[..])),
            (Op::Update, Some(&before[..]), Some(&after[..])),
            (Op::Delete, Some(&before[..]), None),
        ];
        for (op, b, a) in images {
            for limit in [usize::MAX, 1 << 20, 4096, 600] {
                let direct = schema.encode_within(op, b, a, &source, limit).unwrap();
                let tree = schema
                    .encode_within_by_value_tree(op, b, a, &source, limit)
                    .unwrap();
                assert_eq!(
                    direct.body, tree.body,
                    "row {i}, {op:?}, limit {limit}: the direct encoder's bytes differ from the \
                     value tree's"
                );
                assert_eq!(direct.oversize, tree.oversize);
                with_markers += usize::from(!direct.oversize.is_empty());
                compared += 1;
                let event = decode_change(schema.envelope(), &direct.body).unwrap();
                assert_eq!(event.source.lsn, source.lsn);
                assert_eq!(event.source.position, source.position);
            }
        }
    }
    eprintln!("{compared} encodings compared, {with_markers} with oversize markers");
    assert!(
        with_markers > 0,
        "the limits turned some values into markers"
    );
}
