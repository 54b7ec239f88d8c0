//! The CDC backlog: N inserts (transactions of 100 rows) wait in three slots created before
//! they were written, one per consumer, so each drains exactly the same changes:
//! - pg_recvlogical streams its slot with pgoutput to /dev/null: the decoding limit;
//! - `reviewflow cdc` drains its own slot into Kafka; the clock stops when the slot's
//!   confirmed position reaches the end, which it only does once Kafka acknowledged every
//!   change (start-up and schema registration are inside the figure);
//! - Debezium's PostgreSQL connector (a peer) drains the third.
//!
//! One round is noisy on a shared machine, so once the live pipeline is done (`more_rounds`,
//! nothing downstream reading any more) pg_recvlogical and reviewflow alternate on further
//! backlogs of the same size, each in a fresh slot for pg_recvlogical while cdc goes on in its
//! own; the median of the rounds' ratios decides. A last round writes rows of 2 KB of
//! incompressible text, which PostgreSQL moves out of line (TOAST), so the ratio is also
//! known for wide rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::peers::{self, PeerOutcome};
use super::{load, spinner, wait_until, Run};
use crate::error::{Error, Result};

/// The content of a wide row, in bytes.
pub const WIDE_BYTES: u64 = 2048;

#[derive(Clone, Debug, serde::Serialize)]
pub struct CdcFigures {
    pub backlog: u64,
    pub recvlogical_secs: f64,
    pub ours_secs: f64,
    pub ours_cpu_secs: f64,
    pub debezium: PeerOutcome,
    /// Every round of the same backlog, the first (above) included.
    pub rounds: Vec<CdcRound>,
    /// A round of rows with 2 KB of content (TOASTed), after the others.
    pub wide: Option<CdcRound>,
}

/// pg_recvlogical and reviewflow on the same changes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CdcRound {
    pub changes: u64,
    /// Bytes of content per row.
    pub content_bytes: u64,
    pub recvlogical_secs: f64,
    pub ours_secs: f64,
}

impl CdcRound {
    /// reviewflow's rate as a share of pg_recvlogical's.
    pub fn share(&self) -> f64 {
        self.recvlogical_secs / self.ours_secs
    }
}

impl CdcFigures {
    pub fn recvlogical_rate(&self) -> f64 {
        self.backlog as f64 / self.recvlogical_secs
    }

    pub fn ours_rate(&self) -> f64 {
        self.backlog as f64 / self.ours_secs
    }

    /// The median of the rounds' shares, and the worst.
    pub fn median_share(&self) -> (f64, f64) {
        let shares: Vec<f64> = self.rounds.iter().map(CdcRound::share).collect();
        let worst = shares.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
        (super::report::median(shares), worst)
    }
}

pub async fn run(run: &mut Run, shutdown: &CancellationToken) -> Result<CdcFigures> {
    let backlog = run.sizes.backlog;
    let pg = Arc::new(crate::db::connect(&run.settings.database_url).await?);

    // reviewflow's slot, made by cdc itself with the snapshot of the seeded courses.
    let bar = spinner("cdc: creating its slot and snapshotting the courses".into());
    run.slots.push(run.slot.clone());
    run.start("cdc")?;
    let slot = run.slot.clone();
    wait_until(
        run,
        "cdc's snapshot",
        Duration::from_millis(200),
        Duration::from_secs(900),
        shutdown,
        |_| {
            let (pg, slot) = (pg.clone(), slot.clone());
            Box::pin(async move { streaming(&pg, &slot).await })
        },
    )
    .await?;
    run.stop("cdc", "snapshot").await?;
    bar.finish_and_clear();

    let recv_slot = format!("{}_recvlogical", run.db);
    let debezium_slot = format!("{}_debezium", run.db);
    run.create_slot(&recv_slot).await?;
    run.create_slot(&debezium_slot).await?;

    let bar = spinner(format!("cdc: writing a backlog of {backlog} changes"));
    load::backlog(&pg, backlog, run.sizes.courses).await?;
    let end = current_lsn(&pg).await?;
    bar.finish_and_clear();

    let (recvlogical_secs, ours_secs, ours_cpu_secs) =
        drain_both(run, &pg, &recv_slot, &end, shutdown).await?;
    tracing::info!(
        backlog,
        recvlogical_secs,
        ours_secs,
        "cdc backlog drained by pg_recvlogical and reviewflow"
    );

    let debezium = if run.config.skip_peers {
        PeerOutcome::Skipped("--skip-peers".into())
    } else {
        let bar = spinner("cdc: Debezium draining its slot (peer)".into());
        let outcome = debezium(run, &debezium_slot, shutdown).await?;
        bar.finish_and_clear();
        outcome
    };
    run.drop_slot(&debezium_slot).await?;
    Ok(CdcFigures {
        backlog,
        recvlogical_secs,
        ours_secs,
        ours_cpu_secs,
        debezium,
        rounds: vec![CdcRound {
            changes: backlog,
            content_bytes: 0,
            recvlogical_secs,
            ours_secs,
        }],
        wide: None,
    })
}

/// The further rounds, then the wide one, with no other stage running: each writes a new
/// backlog that a fresh pg_recvlogical slot and cdc's own slot both hold, then both drain it.
pub async fn more_rounds(
    run: &mut Run,
    figures: &mut CdcFigures,
    shutdown: &CancellationToken,
) -> Result<()> {
    let pg = Arc::new(crate::db::connect(&run.settings.database_url).await?);
    let backlog = run.sizes.backlog;
    for round in 1..run.sizes.rounds {
        let bar = spinner(format!(
            "cdc round {}: a backlog of {backlog} changes, pg_recvlogical then reviewflow",
            round + 1
        ));
        let slot = format!("{}_recvlogical_{round}", run.db);
        let r = one_round(run, &pg, &slot, backlog, 0, shutdown).await?;
        bar.finish_and_clear();
        tracing::info!(round = round + 1, share = r.share(), "cdc round");
        figures.rounds.push(r);
    }
    // A fifth of the backlog: each row carries ten times the bytes.
    let rows = (backlog / 5).max(100);
    let bar = spinner(format!(
        "cdc, wide rows: {rows} inserts of {WIDE_BYTES} bytes of content (TOAST)"
    ));
    let slot = format!("{}_recvlogical_wide", run.db);
    let wide = one_round(run, &pg, &slot, rows, WIDE_BYTES, shutdown).await?;
    bar.finish_and_clear();
    tracing::info!(share = wide.share(), "cdc round of wide rows");
    figures.wide = Some(wide);
    Ok(())
}

/// One round: a slot for pg_recvlogical, then `rows` inserts (with `content_bytes` of content
/// each, or the usual sentence for 0) that it and cdc's own slot both hold, drained by both.
async fn one_round(
    run: &mut Run,
    pg: &Arc<tokio_postgres::Client>,
    slot: &str,
    rows: u64,
    content_bytes: u64,
    shutdown: &CancellationToken,
) -> Result<CdcRound> {
    run.create_slot(slot).await?;
    let courses = run.sizes.courses;
    match content_bytes {
        0 => load::backlog(pg, rows, courses).await?,
        bytes => load::wide_backlog(pg, rows, courses, bytes).await?,
    }
    let end = current_lsn(pg).await?;
    let (recvlogical_secs, ours_secs, _) = drain_both(run, pg, slot, &end, shutdown).await?;
    Ok(CdcRound {
        changes: rows,
        content_bytes,
        recvlogical_secs,
        ours_secs,
    })
}

/// With the clock stopped, lets cdc's slot move its restart point past `end` before cdc
/// stops. The restart point moves only at a running-transactions record the reader has
/// confirmed (every 15 s, or at a checkpoint); left behind, the next round's cdc would first
/// decode this round's backlog again, which the fresh slot pg_recvlogical gets never does.
async fn release_decoded(pg: &tokio_postgres::Client, slot: &str, end: &str) {
    if let Err(e) = pg.batch_execute("CHECKPOINT").await {
        tracing::warn!(error = %e, "bench: CHECKPOINT failed; cdc's next round may decode this one again");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let moved = pg
            .query_one(
                "SELECT coalesce(restart_lsn >= $2::text::pg_lsn, false)
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &end],
            )
            .await
            .map(|r| r.get::<_, bool>(0));
        match moved {
            Ok(true) => return,
            Ok(false) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                tracing::warn!(error = %e, "bench: reading cdc's restart point");
                return;
            }
        }
    }
    tracing::warn!(
        slot,
        "bench: cdc's restart point did not pass the backlog within 30 s"
    );
}

async fn current_lsn(pg: &tokio_postgres::Client) -> Result<String> {
    Ok(pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0))
}

/// pg_recvlogical drains `recv_slot` up to `end` (then the slot is dropped), then cdc is
/// started on its own slot until its confirmed position reaches `end`, and stopped. Returns
/// pg_recvlogical's seconds, cdc's, and cdc's CPU seconds.
async fn drain_both(
    run: &mut Run,
    pg: &Arc<tokio_postgres::Client>,
    recv_slot: &str,
    end: &str,
    shutdown: &CancellationToken,
) -> Result<(f64, f64, f64)> {
    let bar = spinner("cdc: pg_recvlogical draining its slot to /dev/null".into());
    let recvlogical_secs = recvlogical(run, recv_slot, end, shutdown).await?;
    run.drop_slot(recv_slot).await?;
    bar.finish_and_clear();

    let bar = spinner("cdc: reviewflow cdc draining its slot into Kafka".into());
    let started = Instant::now();
    run.start("cdc")?;
    let (slot, target) = (run.slot.clone(), end.to_string());
    wait_until(
        run,
        "cdc draining the backlog",
        Duration::from_millis(50),
        Duration::from_secs(1800),
        shutdown,
        |_| {
            let (pg, slot, target) = (pg.clone(), slot.clone(), target.clone());
            Box::pin(async move {
                let row = pg
                    .query_one(
                        "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false)
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&slot, &target],
                    )
                    .await?;
                Ok(row.get::<_, bool>(0))
            })
        },
    )
    .await?;
    let ours_secs = started.elapsed().as_secs_f64();
    let ours_cpu_secs = run.stage("cdc")?.cpu_secs();
    release_decoded(pg, &run.slot, end).await;
    run.stop("cdc", "backlog").await?;
    bar.finish_and_clear();
    Ok((recvlogical_secs, ours_secs, ours_cpu_secs))
}

/// The slot's reader has finished its snapshot and streams.
async fn streaming(pg: &tokio_postgres::Client, slot: &str) -> Result<bool> {
    let row = pg
        .query_one(
            "SELECT count(*) FROM pg_replication_slots s
             JOIN pg_stat_replication r ON r.pid = s.active_pid
             WHERE s.slot_name = $1 AND r.state IN ('catchup', 'streaming')",
            &[&slot],
        )
        .await?;
    Ok(row.get::<_, i64>(0) > 0)
}

async fn recvlogical(
    run: &Run,
    slot: &str,
    end: &str,
    shutdown: &CancellationToken,
) -> Result<f64> {
    let tool = crate::stack::client_tool(&run.stack, "pg_recvlogical");
    let started = Instant::now();
    let child = tokio::process::Command::new(&tool)
        .args(["-d", &run.settings.database_url, "--slot", slot, "--start"])
        .args(["--endpos", end, "--no-loop", "-f", "/dev/null"])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=reviewflow",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("start {}", tool.display()), e))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| Error::io("pg_recvlogical", e))?,
        _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
    };
    let secs = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(Error::Command {
            what: "pg_recvlogical".into(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(secs)
}

async fn debezium(run: &Run, slot: &str, shutdown: &CancellationToken) -> Result<PeerOutcome> {
    let config: tokio_postgres::Config = run
        .settings
        .database_url
        .parse()
        .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let args: Vec<String> = [
        "debezium",
        "--pg-host",
        &host,
        "--pg-port",
        &port.to_string(),
        "--pg-user",
        config.get_user().unwrap_or("postgres"),
        "--pg-password",
        &password,
        "--pg-database",
        &run.db,
        "--slot",
        slot,
        "--publication",
        "reviewflow",
        "--bootstrap",
        &run.settings.kafka.bootstrap_servers,
        "--topic-prefix",
        &run.topic("debezium"),
        "--expect",
        &run.sizes.backlog.to_string(),
        "--timeout-s",
        &run.config.peer_timeout_secs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = run.dir.join("peer-debezium.log");
    // The runner's own timeout first; ours a minute later, in case it hangs.
    let limit = Duration::from_secs(run.config.peer_timeout_secs + 60);
    Ok(peers::run(&run.config.peers_dir, &args, &log, limit, shutdown).await)
}
