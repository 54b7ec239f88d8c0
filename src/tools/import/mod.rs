//! `reviewflow import`: a course's reviews from an API shaped like Udemy's API 2.0 into
//! `reviews`, where the pipeline picks them up like any other write.
//!
//! Like the original producer, it reads the review count with page_size=1, then walks the
//! pages from the last to the first: the resource lists the newest first, so the oldest
//! reviews are written first. Each page is written in one transaction, keyed by the
//! source's review id (which becomes `reviews.id`).
//!
//! Guarantee: idempotent. Importing again writes only what changed at the source, so it can
//! be re-run after any failure or interruption to finish the job. A result that is not a
//! valid review is skipped with a warning naming it, and counted; it never stops the import.

mod args;
mod record;
mod resource;
mod store;

use std::collections::HashSet;
use std::fmt;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::secret::shown_url;

pub use args::ImportConfig;
pub use record::{convert, course_of, user_id, Course, Imported, Skipped};
pub use resource::ReviewsResource;

/// What an import did, as far as it got.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub course: i64,
    /// The count the resource announced before the walk.
    pub announced: u64,
    pub fetched: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    /// The course's title, when a result carried its course object.
    pub title: Option<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "course {}: {} fetched ({} announced), {} inserted, {} updated, {} unchanged, {} skipped",
            self.course,
            self.fetched,
            self.announced,
            self.inserted,
            self.updated,
            self.unchanged,
            self.skipped
        )?;
        match &self.title {
            Some(title) => write!(f, "; titled {title:?}"),
            None => write!(
                f,
                "; no course object, so no title (shown as \"Course {}\")",
                self.course
            ),
        }
    }
}

/// Imports the course's reviews into `db`, filling `summary` as it goes so that a caller can
/// report partial work when this fails or is interrupted.
pub async fn import(
    config: &ImportConfig,
    db: &mut Client,
    summary: &mut Summary,
    shutdown: &CancellationToken,
) -> Result<()> {
    let course = config.course;
    summary.course = course;
    let resource = ReviewsResource::new(&config.url, course, config.attempts)?;
    let interrupted = |page: u64| {
        Error::Import(format!(
            "interrupted before page {page} of course {course} was stored; the pages after it \
             are stored, and importing again finishes the job"
        ))
    };
    let first = resource
        .page(1, 1, shutdown)
        .await?
        .ok_or_else(|| interrupted(1))?;
    summary.announced = first.count.ok_or_else(|| {
        Error::Import(format!(
            "course {course}: the answer for page 1 ({}) has no count",
            shown_url(&resource.url(1, 1))
        ))
    })?;
    let pages = summary.announced.div_ceil(config.page_size);
    tracing::info!(
        course,
        reviews = summary.announced,
        pages,
        "importing, last page first"
    );
    let progress = progress_bar(summary.announced);
    for page in (1..=pages).rev() {
        let answer = resource
            .page(page, config.page_size, shutdown)
            .await?
            .ok_or_else(|| interrupted(page))?;
        let fetched = answer.results.len() as u64;
        if page < pages && fetched < config.page_size {
            progress.suspend(|| {
                tracing::warn!(
                    course,
                    page,
                    fetched,
                    page_size = config.page_size,
                    "a page before the last was not full: reviews were deleted meanwhile, or the \
                     server caps page_size below --page-size (then some reviews were not read: \
                     import again with a smaller --page-size)"
                )
            });
        }
        if summary.title.is_none() {
            name_course(db, &resource, &answer.results, summary, &progress).await?;
        }
        let reviews = valid_reviews(&answer.results, course, page, summary, &progress);
        let written = store::write_page(db, course, &reviews).await?;
        for (id, other) in &written.foreign {
            progress.suspend(|| {
                tracing::warn!(
                    course,
                    review = id,
                    stored_under = other,
                    "skipped: this id is already a review of another course, which is left alone"
                )
            });
        }
        summary.fetched += fetched;
        summary.inserted += written.inserted;
        summary.updated += written.updated;
        summary.unchanged += written.unchanged;
        summary.skipped += written.foreign.len() as u64;
        progress.inc(fetched);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Stores the course's title from the first result with a usable course object, if one has
/// it (each result of the resource may carry it; the first page read suffices, the others
/// are only looked at while none had one). A course object that cannot be stored is warned
/// about and the import goes on: the course is then shown as "Course <id>".
async fn name_course(
    db: &Client,
    resource: &ReviewsResource,
    results: &[serde_json::Value],
    summary: &mut Summary,
    progress: &ProgressBar,
) -> Result<()> {
    let course = summary.course;
    for result in results {
        match course_of(result, course, resource.base()) {
            None => continue,
            Some(Err(reason)) => {
                progress
                    .suspend(|| tracing::warn!(course, %reason, "the course object is left out"));
            }
            Some(Ok(named)) => {
                let wrote = store::write_course(db, course, &named).await?;
                progress.suspend(|| tracing::info!(course, title = %named.title, changed = wrote, "course named"));
                summary.title = Some(named.title);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The page's results that are valid reviews, each id once; the others are counted in
/// `summary.skipped` and warned about.
fn valid_reviews(
    results: &[serde_json::Value],
    course: i64,
    page: u64,
    summary: &mut Summary,
    progress: &ProgressBar,
) -> Vec<Imported> {
    let now = Utc::now();
    let mut seen = HashSet::new();
    let mut reviews = Vec::with_capacity(results.len());
    for (position, result) in results.iter().enumerate() {
        let outcome = convert(result, course, now).and_then(|review| {
            if seen.insert(review.id) {
                Ok(review)
            } else {
                Err(Skipped {
                    id: Some(review.id),
                    reason: "it appears twice on the page".into(),
                })
            }
        });
        match outcome {
            Ok(review) => reviews.push(review),
            Err(skipped) => {
                summary.skipped += 1;
                progress.suspend(|| match skipped.id {
                    Some(id) => {
                        tracing::warn!(course, page, review = id, reason = %skipped.reason, "skipped review")
                    }
                    None => tracing::warn!(
                        course, page, result = position + 1, reason = %skipped.reason,
                        "skipped a result without a usable id"
                    ),
                });
            }
        }
    }
    reviews
}

/// Drawn on stderr only when it is a terminal: logs and pipes get the log lines alone.
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("import {bar:40} {pos}/{len} reviews {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
