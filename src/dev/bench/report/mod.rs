//! The figures of a run, judged against the targets, as the terminal summary and as the
//! Markdown report (BENCHMARKS.md). A figure that was not measured (a peer skipped) is
//! shown as skipped with its reason, and its target is neither met nor missed.
//!
//! `targets` judges the figures, `markdown` writes the report (its latency sections in
//! `latency_md`), this file the summary.

mod latency_md;
mod markdown;
mod targets;

use std::fmt::Write;

use super::cdc::CdcFigures;
use super::drain::DrainPoint;
use super::latency::RatePoint;
use super::machine::Machine;
use super::peers::PeerOutcome;
use super::pipeline::{Saturation, STAGES};
use super::website::ProbePoint;
use super::workers::{FraudFigures, StatsFigures};
use super::Sizes;
use targets::{hops_text, Verdict};

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub sizes: Sizes,
    pub command: String,
    pub date: String,
    pub plot: String,
    pub cdc: Option<CdcFigures>,
    pub fraud: Option<FraudFigures>,
    pub stats: Option<StatsFigures>,
    pub saturation: Option<Saturation>,
    /// Saturation with two instances of each worker.
    pub scale_out: Option<Saturation>,
    pub latency: Vec<RatePoint>,
    /// The website-shaped phase: single-review probes over demo's mix, per offered rate.
    pub website: Vec<ProbePoint>,
    /// Probes while the pipeline drains a backlog.
    pub drain: Option<DrainPoint>,
    /// Peak RSS (KiB) by stage and phase.
    pub memory: Vec<(String, &'static str, u64)>,
}

impl Report {
    pub fn new(machine: Machine, sizes: Sizes) -> Self {
        Report {
            machine,
            sizes,
            command: String::new(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            plot: String::new(),
            cdc: None,
            fraud: None,
            stats: None,
            saturation: None,
            scale_out: None,
            latency: Vec::new(),
            website: Vec::new(),
            drain: None,
            memory: Vec::new(),
        }
    }

    /// Peak RSS of each stage over every phase it ran in, in bytes, with that phase.
    pub fn peak_rss(&self) -> Vec<(String, f64, &'static str)> {
        let mut out: Vec<(String, f64, &'static str)> = Vec::new();
        for (stage, phase, kb) in &self.memory {
            let bytes = *kb as f64 * 1024.0;
            match out.iter_mut().find(|(s, _, _)| s == stage) {
                Some(e) if e.1 < bytes => *e = (stage.clone(), bytes, phase),
                Some(_) => {}
                None => out.push((stage.clone(), bytes, phase)),
            }
        }
        out.sort_by_key(|(s, _, _)| STAGES.iter().position(|x| x == s).unwrap_or(99));
        out
    }

    /// The bench's own latency phase, per rate over its rounds.
    pub fn latency_rounds(&self) -> Vec<Rounds> {
        Rounds::of_points(self.latency.iter())
    }

    /// The website-shaped phase, per rate over its rounds.
    pub fn website_rounds(&self) -> Vec<Rounds> {
        Rounds::of_points(self.website.iter().map(|p| &p.probes))
    }

    /// The summary printed at the end of a run.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "machine: {}", self.machine.line());
        let _ = writeln!(o, "command: {}", self.command);
        for s in self.saturation.iter().chain(&self.scale_out) {
            let w = &s.lock_wait;
            let _ = writeln!(
                o,
                "saturation: {} reviews/s from INSERT commit to course_stats with {} instance(s) of each worker, over {:.0} s ({} reviews; slowest second {}/s; longest pause {:.2} s at {:.1} s); backends running {:.2}, waiting on a lock {:.2} ({:.0} %; advisory {:.2})",
                thousands(s.rate()),
                s.instances,
                s.secs,
                thousands(s.reviews as f64),
                thousands(s.slowest_second),
                s.longest_pause_secs,
                s.longest_pause_at_secs,
                w.active,
                w.waiting,
                w.share() * 100.0,
                w.advisory
            );
        }
        for p in &self.latency {
            let _ = writeln!(
                o,
                "latency at {}/s (achieved {}/s, {} samples): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                thousands(p.offered as f64),
                thousands(p.achieved),
                thousands(p.samples as f64),
                p.p50_ms,
                p.p95_ms,
                p.p99_ms,
                p.max_ms
            );
            if !p.hops.is_empty() {
                let _ = writeln!(o, "  by hop (p50 / p99): {}", hops_text(p));
            }
        }
        for p in &self.website {
            let _ = writeln!(o, "{}", p.line());
            if !p.probes.hops.is_empty() {
                let _ = writeln!(o, "  by hop (p50 / p99): {}", hops_text(&p.probes));
            }
        }
        if let Some(d) = &self.drain {
            let _ = writeln!(o, "{}", d.line());
        }
        for r in self.latency_rounds() {
            let _ = writeln!(o, "{}", r.line("latency"));
        }
        for r in self.website_rounds() {
            let _ = writeln!(o, "{}", r.line("website latency"));
        }
        if let Some(c) = &self.cdc {
            let _ = writeln!(
                o,
                "cdc backlog of {} changes: pg_recvlogical {:.2} s ({}/s); reviewflow cdc {:.2} s ({}/s); Debezium: {}",
                thousands(c.backlog as f64),
                c.recvlogical_secs,
                thousands(c.recvlogical_rate()),
                c.ours_secs,
                thousands(c.ours_rate()),
                peer_text(&c.debezium)
            );
            let (median, worst) = c.median_share();
            let _ = writeln!(
                o,
                "cdc over {} round(s): median share of pg_recvlogical {:.1} %, worst {:.1} %{}",
                c.rounds.len(),
                median * 100.0,
                worst * 100.0,
                c.wide.as_ref().map_or(String::new(), |w| format!(
                    "; rows of {} bytes (TOAST): {:.1} %",
                    w.content_bytes,
                    w.share() * 100.0
                ))
            );
        }
        if let Some(f) = &self.fraud {
            let _ = writeln!(
                o,
                "fraud: {} changes in {:.2} s ({}/s, {} transactions, {} flagged); ProducerPerformance {}",
                thousands(f.records as f64),
                f.secs,
                thousands(f.records as f64 / f.secs),
                f.transactions,
                f.flagged,
                f.producer_perf
                    .map_or("-".into(), |r| format!("{}/s", thousands(r)))
            );
        }
        if let Some(s) = &self.stats {
            let _ = writeln!(
                o,
                "stats: {} changes in {:.2} s ({} changes/s); verify: 0 differences in {} courses; Kafka Streams (91 hopping windows): {}",
                thousands(s.changes as f64),
                s.secs,
                thousands(s.changes as f64 / s.secs),
                thousands(s.verified_courses as f64),
                peer_text(&s.streams)
            );
        }
        let rss: Vec<String> = self
            .peak_rss()
            .iter()
            .map(|(s, b, _)| format!("{s} {}", mb(*b)))
            .collect();
        let _ = writeln!(o, "peak RSS: {}", rss.join(", "));
        let _ = writeln!(o, "targets:");
        for t in self.targets() {
            let _ = writeln!(
                o,
                "  {:<5} {:<8} {:<64} {}",
                t.level.name(),
                verdict(&t.verdict),
                t.what,
                t.figure
            );
        }
        o
    }
}

fn peer_text(p: &PeerOutcome) -> String {
    match p {
        PeerOutcome::Ran(f) => format!("{:.2} s, {}/s", f.seconds, thousands(f.records_per_s)),
        PeerOutcome::Skipped(why) => format!("skipped ({why})"),
    }
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "PASS".into(),
        Verdict::Miss => "MISS".into(),
        Verdict::Skipped(why) => format!("SKIPPED ({why})"),
    }
}

fn pg_share(s: &StatsFigures) -> String {
    match s.postgres_cpu_secs {
        Some(pg) => format!(
            "During the stats phase the worker used {:.1} s of CPU and PostgreSQL {:.1} s: \
             PostgreSQL's share is {:.0} %, so the stats stage is bound by its statements \
             (the per-course upserts of course_stats and course_daily_stats), not by decoding; \
             larger batches (--batch-records) amortise them.",
            s.cpu_secs,
            pg,
            pg / (pg + s.cpu_secs).max(1e-9) * 100.0
        ),
        None => "PostgreSQL's CPU was not measured (not the self-managed stack).".into(),
    }
}

/// 1234567.8 -> "1,234,568".
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < -0.5 {
        out.insert(0, '-');
    }
    out
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(f64::NAN), "-");
    }
}

/// The median of the rounds' figures (the mean of the middle two for an even count); NaN
/// for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[mid],
        _ => (xs[mid - 1] + xs[mid]) / 2.0,
    }
}

/// One offered rate over its rounds: the median of the rounds' percentiles (which decides a
/// target) and the worst round's p99 beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rounds {
    pub offered: u64,
    pub rounds: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub worst_p99_ms: f64,
}

impl Rounds {
    /// Per offered rate (in the order first seen), from (offered, [p50, p95, p99]) per round.
    pub fn of(points: impl IntoIterator<Item = (u64, [f64; 3])>) -> Vec<Rounds> {
        let mut by_rate: Vec<(u64, Vec<[f64; 3]>)> = Vec::new();
        for (offered, p) in points {
            match by_rate.iter_mut().find(|(o, _)| *o == offered) {
                Some((_, v)) => v.push(p),
                None => by_rate.push((offered, vec![p])),
            }
        }
        by_rate
            .into_iter()
            .map(|(offered, v)| {
                let median = |i: usize| median(v.iter().map(|p| p[i]).collect());
                Rounds {
                    offered,
                    rounds: v.len(),
                    p50_ms: median(0),
                    p95_ms: median(1),
                    p99_ms: median(2),
                    worst_p99_ms: v.iter().map(|p| p[2]).fold(f64::NEG_INFINITY, f64::max),
                }
            })
            .collect()
    }

    fn of_points<'a>(points: impl Iterator<Item = &'a RatePoint>) -> Vec<Rounds> {
        Rounds::of(points.map(|p| (p.offered, [p.p50_ms, p.p95_ms, p.p99_ms])))
    }

    pub fn line(&self, phase: &str) -> String {
        format!(
            "{phase} at {}/s, median of {} round(s): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; worst round's p99 {:.1} ms",
            thousands(self.offered as f64),
            self.rounds,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.worst_p99_ms
        )
    }
}

#[cfg(test)]
mod rounds_tests {
    use super::Rounds;

    #[test]
    fn the_median_decides_and_the_worst_p99_is_kept() {
        let r = Rounds::of([
            (1000, [10.0, 20.0, 30.0]),
            (2000, [5.0, 6.0, 7.0]),
            (1000, [12.0, 22.0, 300.0]),
            (1000, [11.0, 21.0, 31.0]),
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].offered, r[0].rounds), (1000, 3));
        assert_eq!((r[0].p50_ms, r[0].p95_ms, r[0].p99_ms), (11.0, 21.0, 31.0));
        assert_eq!(r[0].worst_p99_ms, 300.0);
        assert_eq!((r[1].rounds, r[1].p99_ms, r[1].worst_p99_ms), (1, 7.0, 7.0));
    }
}
