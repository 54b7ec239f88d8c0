//! BENCHMARKS.md's latency sections: the bench's own load, the website-shaped load, the
//! backlog drain, and the rounds' medians.

use std::fmt::Write;

use super::{hops_text, thousands, Report};
use crate::dev::bench::latency::RatePoint;

impl Report {
    pub(super) fn md_latency(&self, o: &mut String) {
        if self.latency.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## Latency\n");
        let _ = writeln!(
            o,
            "From a review's commit (the INSERT returning) to the course_stats row that reflects \
             it becoming visible: the stats worker runs `pg_notify('course_stats', <course ids>)` \
             inside its transaction, which PostgreSQL delivers only after the commit, and a \
             LISTEN connection stamps each notification as it arrives. At each offered rate \
             every course gets at most one review, so a notification maps to exactly one \
             review. Reviews are written every 10 ms in one transaction each; an HDR histogram \
             keeps the latencies. Plot: `{}`.\n",
            self.plot
        );
        let _ = writeln!(
            o,
            "| offered | achieved | samples | p50 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in &self.latency {
            let _ = writeln!(
                o,
                "| {}/s | {}/s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                thousands(p.offered as f64),
                thousands(p.achieved),
                thousands(p.samples as f64),
                p.p50_ms,
                p.p95_ms,
                p.p99_ms,
                p.max_ms
            );
        }
        let _ = writeln!(
            o,
            "\n![p50, p95, p99 against the offered rate]({})",
            self.plot
        );
    }

    pub(super) fn md_website(&self, o: &mut String) {
        if self.website.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## Latency under a website's load\n");
        let _ = writeln!(
            o,
            "The load a review site makes: a background writer replays `reviewflow demo`'s mix \
             (inserts, rating and content edits, deletes, about 3 % spam) open-loop at the offered \
             rate on the bench's courses, while a probe commits one review per transaction every \
             50 ms, each on a course of a private range nobody else writes. A probe is timed from \
             its COMMIT returning until the stats worker's notification naming its course \
             arrives (the same LISTEN clock as above). A probe the fraud model flagged has no \
             latency and is counted as flagged; one neither visible within {} s nor flagged is \
             counted as missing. The background sends each transaction's statements at once \
             (pipelined on its connection), so one connection offers thousands of changes a \
             second; its achieved rate is beside the offered one. Before each rate the bench \
             waits until the pipeline has caught up (one review on each of 32 fresh courses, so \
             on every partition, visible), so no rate starts behind the backlog of the one \
             before.\n",
            crate::dev::bench::latency::QUIET.as_secs()
        );
        let _ = writeln!(
            o,
            "| round | background offered | achieved | probes | flagged | missing | p50 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in &self.website {
            let _ = writeln!(
                o,
                "| {} | {}/s | {}/s | {} |",
                p.probes.round + 1,
                thousands(p.probes.offered as f64),
                thousands(p.background_achieved),
                probe_cells(&p.probes, p.missing)
            );
        }
        let _ = writeln!(
            o,
            "\nWhere a probe's time goes, by hop (p50 / p99), from the instants the bench's tap \
             first saw it in the changes and the valid topic:\n"
        );
        let _ = writeln!(
            o,
            "| round | background | by hop (p50 / p99) |\n| --- | --- | --- |"
        );
        for p in &self.website {
            let _ = writeln!(
                o,
                "| {} | {}/s | {} |",
                p.probes.round + 1,
                thousands(p.probes.offered as f64),
                hops_text(&p.probes)
            );
        }
    }

    pub(super) fn md_drain(&self, o: &mut String) {
        let Some(d) = &self.drain else { return };
        let _ = writeln!(o, "\n## Latency during a backlog drain\n");
        let _ = writeln!(
            o,
            "What live reviews suffer while a backlog catches up: with the rest of the pipeline \
             running, cdc was stopped, {} inserts were written (transactions of 100 rows, {:.1} s; \
             the slot kept them) and cdc was started again. From then until the stats worker had \
             applied the whole backlog, a probe committed one review every 50 ms on a private \
             course, timed from its COMMIT returning to its course_stats notification. A \
             partition's changes are applied in order, so a probe waits behind the backlog \
             written before it.\n",
            thousands(d.backlog as f64),
            d.write_secs
        );
        let _ = writeln!(
            o,
            "| backlog | drained in | drain rate | probes | flagged | missing | p50 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let _ = writeln!(
            o,
            "| {} | {:.1} s | {}/s | {} |",
            thousands(d.backlog as f64),
            d.drain_secs,
            thousands(d.rate()),
            probe_cells(&d.probes, d.missing)
        );
        let _ = writeln!(o, "\nBy hop (p50 / p99): {}.", hops_text(&d.probes));
    }

    pub(super) fn md_rounds(&self, o: &mut String) {
        if self.latency.is_empty() && self.website.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## Latency over {} round(s)\n", self.sizes.rounds);
        let _ = writeln!(
            o,
            "Each latency rate of both phases ran {} time(s) (`--rounds`), one after the other; \
             per rate, the median of the rounds' p50, p95 and p99 (which decides a target) and \
             the worst round's p99 beside it. The JSON (`--json`) keeps every round.\n",
            self.sizes.rounds
        );
        let _ = writeln!(
            o,
            "| phase | offered | rounds | median p50 | median p95 | median p99 | worst p99 |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        let phases = [
            ("bench's own load", self.latency_rounds()),
            ("website's load", self.website_rounds()),
        ];
        for (phase, rounds) in phases {
            for r in rounds {
                let _ = writeln!(
                    o,
                    "| {phase} | {}/s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                    thousands(r.offered as f64),
                    r.rounds,
                    r.p50_ms,
                    r.p95_ms,
                    r.p99_ms,
                    r.worst_p99_ms
                );
            }
        }
    }
}

/// The cells of a probe phase's row: probes, flagged, missing, p50, p95, p99, max.
fn probe_cells(p: &RatePoint, missing: u64) -> String {
    format!(
        "{} | {} | {missing} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms",
        p.samples, p.flagged, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
    )
}
