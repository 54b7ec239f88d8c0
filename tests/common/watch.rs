//! A reader of course_stats as a website is one: it queries the table every few
//! milliseconds while a test runs and keeps every negative figure it ever saw. A figure
//! below zero means a retraction was applied before the addition it takes back, which
//! per-course order (a course move included) must rule out at every instant, not only
//! once the pipeline caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The figures of course_stats that count something, so can never be negative.
const COUNTED: [&str; 16] = [
    "review_count",
    "rating_sum",
    "stars_0",
    "stars_1",
    "stars_2",
    "stars_3",
    "stars_4",
    "stars_5",
    "recent_review_count",
    "recent_rating_sum",
    "recent_stars_0",
    "recent_stars_1",
    "recent_stars_2",
    "recent_stars_3",
    "recent_stars_4",
    "recent_stars_5",
];

pub struct NegativeWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

/// What the watcher saw: how many reads of the table succeeded, and each negative figure
/// as `course N: figure = value`.
#[derive(Debug, Default)]
pub struct Seen {
    pub reads: u64,
    pub negatives: Vec<String>,
}

impl Seen {
    /// The watcher read often, and never saw a negative figure.
    pub fn assert_often_and_never_negative(&self) {
        assert!(
            self.reads > 100,
            "the watcher read course_stats often ({} reads)",
            self.reads
        );
        assert!(
            self.negatives.is_empty(),
            "{} negative figures seen, the first: {:?}",
            self.negatives.len(),
            &self.negatives[..self.negatives.len().min(10)]
        );
    }
}

impl NegativeWatch {
    /// Starts reading course_stats of `url` every `every`, reconnecting after a failed
    /// read (PostgreSQL may be restarted under it).
    pub fn start(url: &str, every: Duration) -> NegativeWatch {
        let (url, stop) = (url.to_string(), Arc::new(AtomicBool::new(false)));
        let stopping = stop.clone();
        let figures: Vec<String> = COUNTED
            .iter()
            .map(|c| format!("CASE WHEN {c} < 0 THEN '{c} = ' || {c} END"))
            .collect();
        let query = format!(
            "SELECT course_id, concat_ws(', ', {}) FROM course_stats WHERE {}",
            figures.join(", "),
            COUNTED.map(|c| format!("{c} < 0")).join(" OR ")
        );
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut db = None;
            while !stopping.load(Ordering::Relaxed) {
                if db.is_none() {
                    db = reviewflow::db::connect(&url).await.ok();
                }
                if let Some(client) = &db {
                    match client.query(&query, &[]).await {
                        Ok(rows) => {
                            seen.reads += 1;
                            seen.negatives.extend(rows.iter().map(|r| {
                                format!("course {}: {}", r.get::<_, i64>(0), r.get::<_, String>(1))
                            }));
                        }
                        Err(_) => db = None,
                    }
                }
                tokio::time::sleep(every).await;
            }
            seen
        });
        NegativeWatch { stop, task }
    }

    /// Stops the watcher and returns what it saw.
    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the watcher does not panic")
    }
}
