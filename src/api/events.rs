//! GET /courses/{id}/events: a course's statistics as server-sent events, pushed when the
//! stats worker commits a change to them.
//!
//! One task per api process LISTENs on the `course_stats` channel (see
//! `sink::stats::notify`) over a dedicated connection and fans the notifications out through a
//! broadcast channel; each event stream re-reads its course's row when a notification names
//! the course (or `*`). The task starts with the first stream, reconnects with backoff, and
//! after a reconnect tells every stream to re-read (notifications sent while it was away are
//! lost). Streams end when the server shuts down, so a graceful shutdown does not wait on them.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::stats::{course_id, read_stats};
use super::{ApiError, AppState};
use crate::contract::notify::{self, Touched};
use crate::retry::Backoff;

/// What the listener broadcasts: a course to re-read, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Course(i64),
    All,
}

/// The listener, shared by every event stream of a router.
#[derive(Clone)]
pub struct CourseEvents {
    inner: Arc<Inner>,
}

struct Inner {
    database_url: String,
    sender: OnceLock<broadcast::Sender<Changed>>,
    stop: CancellationToken,
}

impl CourseEvents {
    /// Listens on the database at `database_url` once a stream asks for it.
    pub fn new(database_url: impl Into<String>) -> Self {
        CourseEvents {
            inner: Arc::new(Inner {
                database_url: database_url.into(),
                sender: OnceLock::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Ends the listener and every event stream.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// A receiver of every change from now on, the listener started if it was not.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.inner
            .sender
            .get_or_init(|| {
                let (sender, _) = broadcast::channel(1024);
                tokio::spawn(listen(
                    self.inner.database_url.clone(),
                    sender.clone(),
                    self.inner.stop.clone(),
                ));
                sender
            })
            .subscribe()
    }
}

/// Listens until `stop`, reconnecting after failures.
async fn listen(url: String, sender: broadcast::Sender<Changed>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let failure = tokio::select! {
            e = listen_once(&url, &sender, &mut backoff) => e,
            _ = stop.cancelled() => return,
        };
        tracing::warn!(error = %failure, "course_stats listener lost its connection; reconnecting");
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// One connection's life: LISTEN, then forward notifications until it fails.
async fn listen_once(
    url: &str,
    sender: &broadcast::Sender<Changed>,
    backoff: &mut Backoff,
) -> crate::error::Error {
    let target = match crate::db::target(url) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let tls = match target.make_tls() {
        Ok(t) => t,
        Err(e) => return e,
    };
    let (client, mut connection) = match target.config.connect(tls).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    // The connection is polled here, not spawned, so its notifications come to us.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {}", notify::CHANNEL);
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    loop {
        tokio::select! {
            done = &mut listening => match done {
                Ok(()) => break,
                Err(e) => return e.into(),
            },
            m = messages.next() => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.into(),
                None => return closed(),
            },
        }
    }
    backoff.reset();
    // Whatever was notified while no one listened is lost: everyone re-reads.
    let _ = sender.send(Changed::All);
    loop {
        match messages.next().await {
            Some(Ok(AsyncMessage::Notification(n))) => match notify::parse(n.payload()) {
                Touched::All => {
                    let _ = sender.send(Changed::All);
                }
                Touched::Courses(courses) => {
                    for course in courses {
                        let _ = sender.send(Changed::Course(course));
                    }
                }
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return e.into(),
            None => return closed(),
        }
    }
}

fn closed() -> crate::error::Error {
    crate::error::Error::io(
        "listen on course_stats",
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed"),
    )
}

/// The course's row now and after every change, as `stats` events (a `missing` event, data
/// `null`, when the course has no row), with keep-alive comments between.
pub async fn course_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = course_id(&id)?;
    // Subscribed before the first read, so no change falls between the two.
    let changes = state.events.subscribe();
    let first = read_stats(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no statistics for course {id} yet")))?;
    let stop = state.events.inner.stop.clone();
    let stream = futures_util::stream::unfold(
        (changes, state, Some(first), None::<Value>),
        move |(mut changes, state, first, last)| async move {
            if let Some(first) = first {
                let event = event(&first);
                return Some((event, (changes, state, None, Some(first))));
            }
            loop {
                let wanted = match changes.recv().await {
                    Ok(Changed::Course(c)) => c == id,
                    Ok(Changed::All) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                if !wanted {
                    continue;
                }
                let now = match read_stats(&state.pool, id).await {
                    Ok(row) => row.unwrap_or(Value::Null),
                    Err(e) => {
                        tracing::warn!(course = id, error = %e.error, "re-reading course_stats for an event stream");
                        continue;
                    }
                };
                if last.as_ref() != Some(&now) {
                    let event = event(&now);
                    return Some((event, (changes, state, None, Some(now))));
                }
            }
        },
    )
    .take_until(stop.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(stats: &Value) -> Result<Event, Infallible> {
    let kind = if stats.is_null() { "missing" } else { "stats" };
    Ok(Event::default().event(kind).data(stats.to_string()))
}
