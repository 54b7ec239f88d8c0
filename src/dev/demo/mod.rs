//! `reviewflow demo`: a load generator, so that someone new to the project sees the figures
//! move. It writes reviews by plain SQL, as any application would, at a steady rate across
//! a set of courses: mostly inserts, some edits of rating or content, a few deletes, and a
//! little spam for the fraud model.
//!
//! Guarantee: it only touches reviews it inserted itself in this run, and the sequence of
//! changes is a function of the seed (see `generate`).

mod args;
mod generate;
mod words;

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

pub use args::DemoConfig;
pub use generate::{course_title, Change, Generator, NewReview, Rng};

/// How often changes are written: small enough that the rate looks steady.
const TICK: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The most courses the demo names, so a huge --courses does not write a huge table.
const NAMED_COURSES: i64 = 10_000;

/// Changes written, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inserts: u64,
    pub edits: u64,
    pub deletes: u64,
    pub spam: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.inserts + self.edits + self.deletes
    }
}

/// Writes changes until shutdown or the configured duration; returns what it wrote.
pub async fn run(
    config: &DemoConfig,
    db: &mut Client,
    shutdown: &CancellationToken,
) -> Result<Counts> {
    let seed = config.seed.unwrap_or_else(clock_seed);
    tracing::info!(
        seed,
        rate = config.rate,
        courses = config.courses,
        "demo writing reviews (repeat this run with --seed {seed})"
    );
    name_courses(db, config.courses).await?;
    let mut generator = Generator::new(seed, config.courses);
    let mut live: Vec<i64> = Vec::new();
    let (mut all, mut since_report) = (Counts::default(), Counts::default());
    let started = Instant::now();
    let deadline = config.duration.map(|s| started + Duration::from_secs(s));
    let mut last_report = started;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // Aim at rate × elapsed changes in all, so a slow write is made up for; but never
        // more than a second's worth at once, so a stall does not end in a burst.
        let target = (started.elapsed().as_secs_f64() * f64::from(config.rate)) as u64;
        let due = target
            .saturating_sub(all.total())
            .min(u64::from(config.rate));
        if due > 0 {
            let wrote = write(db, &mut generator, &mut live, due).await?;
            add(&mut all, wrote);
            add(&mut since_report, wrote);
        }
        if now.duration_since(last_report) >= REPORT_EVERY {
            tracing::info!(
                wrote = since_report.total(),
                inserts = since_report.inserts,
                edits = since_report.edits,
                deletes = since_report.deletes,
                spam = since_report.spam,
                total = all.total(),
                "demo: changes in the last {} s",
                REPORT_EVERY.as_secs()
            );
            since_report = Counts::default();
            last_report = now;
        }
    }
    Ok(all)
}

/// Titles for courses 1..=`courses` (the first [`NAMED_COURSES`]; any beyond are shown as
/// "Course <id>") in reviewflow_catalog.courses; a course named already (by an import, or a
/// website) keeps its name.
async fn name_courses(db: &Client, courses: i64) -> Result<()> {
    let ids: Vec<i64> = (1..=courses.min(NAMED_COURSES)).collect();
    let titles: Vec<String> = ids.iter().map(|id| course_title(*id)).collect();
    db.execute(
        "INSERT INTO reviewflow_catalog.courses (id, title)
         SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT (id) DO NOTHING",
        &[&ids, &titles],
    )
    .await?;
    Ok(())
}

/// `count` changes in one transaction (also the bench's website-shaped background).
///
/// Every statement is sent at once, pipelined on the connection, rather than each waiting
/// for the one before: one round trip per transaction instead of one per change, so a single
/// connection keeps up with thousands of changes a second. So that no statement needs
/// another's answer, an edit or delete picks among the reviews live before this transaction
/// (less those it deleted); its own inserts can be picked from the next transaction on.
pub async fn write(
    db: &mut Client,
    generator: &mut Generator,
    live: &mut Vec<i64>,
    count: u64,
) -> Result<Counts> {
    let tx = db.transaction().await?;
    let (insert, rating, content, delete) = tokio::try_join!(
        tx.prepare(
            "INSERT INTO reviews (course_id, user_id, rating, title, content, created_at)
             VALUES ($1, $2, $3::float8::numeric(2,1), $4, $5, $6) RETURNING id"
        ),
        tx.prepare("UPDATE reviews SET rating = $2::float8::numeric(2,1) WHERE id = $1"),
        tx.prepare("UPDATE reviews SET content = $2 WHERE id = $1"),
        tx.prepare("DELETE FROM reviews WHERE id = $1"),
    )?;
    let mut counts = Counts::default();
    let now = Utc::now();
    let mut planned = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let change = generator.next(live.len());
        let step = match change {
            Change::Insert(r) => {
                counts.inserts += 1;
                counts.spam += u64::from(r.spam);
                let created_at = now - r.age;
                Step::Insert(r, created_at)
            }
            Change::Rating { pick, rating } => {
                counts.edits += 1;
                Step::Rating(live[pick], rating.stars())
            }
            Change::Content {
                pick,
                content,
                spam,
            } => {
                counts.edits += 1;
                counts.spam += u64::from(spam);
                Step::Content(live[pick], content)
            }
            Change::Delete { pick } => {
                counts.deletes += 1;
                // swap_remove reorders, but the same way on every run: picks stay seeded.
                Step::Delete(live.swap_remove(pick))
            }
        };
        planned.push(step);
    }
    type Sent<'a> = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = std::result::Result<Option<i64>, tokio_postgres::Error>,
                > + Send
                + 'a,
        >,
    >;
    let sent: Vec<Sent> = planned
        .iter()
        .map(|step| -> Sent {
            match step {
                Step::Insert(r, created_at) => Box::pin(async {
                    let row = tx
                        .query_one(
                            &insert,
                            &[
                                &r.course_id,
                                &r.user_id,
                                &r.rating.stars(),
                                &r.title,
                                &r.content,
                                created_at,
                            ],
                        )
                        .await?;
                    Ok(Some(row.get(0)))
                }),
                Step::Rating(id, stars) => {
                    Box::pin(async { tx.execute(&rating, &[id, stars]).await.map(|_| None) })
                }
                Step::Content(id, text) => {
                    Box::pin(async { tx.execute(&content, &[id, text]).await.map(|_| None) })
                }
                Step::Delete(id) => {
                    Box::pin(async { tx.execute(&delete, &[id]).await.map(|_| None) })
                }
            }
        })
        .collect();
    let inserted = futures_util::future::try_join_all(sent).await?;
    tx.commit().await?;
    live.extend(inserted.into_iter().flatten());
    Ok(counts)
}

/// A change resolved to the row it touches, ready to be sent.
enum Step {
    Insert(generate::NewReview, chrono::DateTime<Utc>),
    Rating(i64, f64),
    Content(i64, String),
    Delete(i64),
}

fn add(to: &mut Counts, more: Counts) {
    to.inserts += more.inserts;
    to.edits += more.edits;
    to.deletes += more.deletes;
    to.spam += more.spam;
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
