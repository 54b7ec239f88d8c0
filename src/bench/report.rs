//! The figures of a run, judged against the targets, as the terminal summary and as the
//! Markdown report (BENCHMARKS.md). A figure that was not measured (a peer skipped) is
//! shown as skipped with its reason, and its target is neither met nor missed.

use std::fmt::Write;

use super::cdc::CdcFigures;
use super::latency::RatePoint;
use super::machine::Machine;
use super::peers::PeerOutcome;
use super::pipeline::{Saturation, STAGES};
use super::workers::{FraudFigures, StatsFigures};
use super::Sizes;

/// The RSS target, in bytes ("100 MB").
const RSS_LIMIT: f64 = 100e6;
/// Where p99 is judged.
const P99_RATE: u64 = 5_000;

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
    pub latency: Vec<RatePoint>,
    /// Peak RSS (KiB) by stage and phase.
    pub memory: Vec<(String, &'static str, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Miss,
    Skipped(String),
}

/// One target: what, the figure, the verdict, and (for a miss) where the time goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: &'static str,
    pub figure: String,
    pub verdict: Verdict,
    pub diagnosis: String,
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
            latency: Vec::new(),
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

    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(c) = &self.cdc {
            let share = c.ours_rate() / c.recvlogical_rate();
            let busy = c.ours_cpu_secs / c.ours_secs;
            out.push(Target {
                what: "CDC >= 80 % of pg_recvlogical",
                figure: format!("{:.1} %", share * 100.0),
                verdict: judge(share >= 0.8),
                diagnosis: format!(
                    "the reader's process was busy {:.0} % of the drain ({:.1} s CPU in {:.1} s): {}",
                    busy * 100.0,
                    c.ours_cpu_secs,
                    c.ours_secs,
                    if busy > 0.8 {
                        "it is CPU-bound in its own work (pgoutput parsing, the Avro encoding of each \
                         change, lz4): writing the Avro body straight from the text values, without \
                         the generic value tree, is the fix"
                    } else {
                        "it waits more than it works: on the walsender (decoding, shared with the \
                         broker on the same cores) and on Kafka's acknowledgements; larger producer \
                         batches (linger.ms, batch.num.messages) and fewer status round trips help"
                    }
                ),
            });
            out.push(match c.debezium.figures() {
                Some(d) => {
                    let ratio = c.ours_rate() / d.records_per_s;
                    Target {
                        what: "CDC >= 3x Debezium",
                        figure: format!("{ratio:.2}x"),
                        verdict: judge(ratio >= 3.0),
                        diagnosis: format!(
                            "Debezium drained {} changes in {:.1} s (start-up {}); reviewflow's \
                             clock includes its own start-up too",
                            thousands(d.records as f64),
                            d.seconds,
                            d.startup_seconds
                                .map_or("not reported".into(), |s| format!("{s:.1} s"))
                        ),
                    }
                }
                None => skipped("CDC >= 3x Debezium", &c.debezium),
            });
        }
        out.push(match self.latency.iter().find(|p| p.offered == P99_RATE) {
            Some(p) => Target {
                what: "p99 <= 100 ms at 5,000 reviews/s",
                figure: format!("{:.1} ms", p.p99_ms),
                verdict: judge(p.p99_ms <= 100.0),
                diagnosis: format!(
                    "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; by hop (p50 / p99): {}. {}",
                    p.p50_ms,
                    p.p95_ms,
                    p.p99_ms,
                    hops_text(p),
                    slowest_hop(p)
                ),
            },
            None => Target {
                what: "p99 <= 100 ms at 5,000 reviews/s",
                figure: "-".into(),
                verdict: Verdict::Skipped("5,000 reviews/s was not among the rates".into()),
                diagnosis: String::new(),
            },
        });
        if let Some(s) = &self.stats {
            let rate = s.changes as f64 / s.secs;
            out.push(match s.streams.figures() {
                Some(k) => {
                    let ratio = rate / k.records_per_s;
                    Target {
                        what: "stats worker >= 20x the hopping-window version",
                        figure: format!("{ratio:.1}x"),
                        verdict: judge(ratio >= 20.0),
                        diagnosis: format!(
                            "the stats worker applied {} changes/s; Kafka Streams with 91 hopping \
                             windows {} records/s. {}",
                            thousands(rate),
                            thousands(k.records_per_s),
                            pg_share(s)
                        ),
                    }
                }
                None => skipped("stats worker >= 20x the hopping-window version", &s.streams),
            });
        }
        let peaks = self.peak_rss();
        if !peaks.is_empty() {
            let worst = peaks
                .iter()
                .cloned()
                .fold(None::<(String, f64, &str)>, |m, p| match m {
                    Some(m) if m.1 >= p.1 => Some(m),
                    _ => Some(p),
                });
            let over: Vec<String> = peaks
                .iter()
                .filter(|p| p.1 >= RSS_LIMIT)
                .map(|(s, b, phase)| format!("{s} {} ({phase})", mb(*b)))
                .collect();
            let (stage, bytes, phase) = worst.unwrap_or_default();
            out.push(Target {
                what: "each stage < 100 MB RSS",
                figure: format!("largest: {stage} {} ({phase})", mb(bytes)),
                verdict: judge(over.is_empty()),
                diagnosis: format!(
                    "over the limit: {}. The backlog is the worst case: a worker's consumer \
                     then has its prefetch full. With librdkafka's default prefetch (100,000 records \
                     or 64 MB, counting payloads only) each worker was 130-150 MB resident; a \
                     heap profile (heaptrack) of the stats worker on the backlog, with the bound \
                     lowered to 4 MB, still had its 67 MB peak in librdkafka: \
                     rd_kafka_buf_new_shadow (the bookkeeping of each prefetched record, ~700 \
                     bytes beside a ~200-byte record) and rd_kafka_lz4_decompress (the 1 MiB \
                     fetches' decompressed batches those records keep alive). The workers' consumers now \
                     prefetch two batches ahead (queued.min.messages = 2 x \
                     REVIEWFLOW_BATCH_RECORDS, at least 10,000; queued.max.messages.kbytes 4096; \
                     max.partition.fetch.bytes 256 KiB; fetch.queue.backoff.ms 10, without which \
                     the small bound starves the fraud worker); KAFKA_* settings can raise it",
                    if over.is_empty() {
                        "none".into()
                    } else {
                        over.join(", ")
                    }
                ),
            });
        }
        out
    }

    /// The summary printed at the end of a run.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "machine: {}", self.machine.line());
        let _ = writeln!(o, "command: {}", self.command);
        if let Some(s) = &self.saturation {
            let _ = writeln!(
                o,
                "saturation: {} reviews/s from INSERT commit to course_stats, over {:.0} s ({} reviews; slowest second {}/s)",
                thousands(s.rate()),
                s.secs,
                thousands(s.reviews as f64),
                thousands(s.slowest_second)
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
                "  {:<8} {:<48} {}",
                verdict(&t.verdict),
                t.what,
                t.figure
            );
        }
        o
    }

    /// BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(o, "# Benchmarks\n");
        let _ = writeln!(
            o,
            "Written by `reviewflow bench` on {}. Speed is measured here, never asserted in \
             tests. Reproduce with a build that has the benchmark (`cargo build --release \
             --features bench`):\n\n```\n{}\n```\n",
            self.date, self.command
        );
        let _ = writeln!(
            o,
            "Machine: {} cores, {}, {:.1} GiB RAM, Linux {}; PostgreSQL {} and Apache Kafka {} \
             (the self-managed stack, on the same machine). Everything below ran in one run, \
             on the same data: {} courses, a backlog of {} changes{}.\n",
            m.cores,
            m.cpu,
            m.ram_gib,
            m.kernel,
            m.postgres,
            m.kafka,
            thousands(self.sizes.courses as f64),
            thousands(self.sizes.backlog as f64),
            if self.sizes.quick {
                " (the quick form: figures of a smoke run, not of the benchmark)"
            } else {
                ""
            }
        );
        let _ = writeln!(o, "## Targets\n");
        let _ = writeln!(o, "| target | figure | verdict |\n| --- | --- | --- |");
        let targets = self.targets();
        for t in &targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                t.what,
                t.figure,
                verdict_md(&t.verdict)
            );
        }
        self.md_saturation(&mut o);
        self.md_latency(&mut o);
        self.md_cdc(&mut o);
        self.md_workers(&mut o);
        self.md_memory(&mut o);
        self.md_notes(&mut o);
        let _ = writeln!(o, "\n## Where the time goes\n");
        let _ = writeln!(
            o,
            "The profile is each process's CPU time (user + system, from /proc) over the \
             saturation window, beside the wall time: on {} cores the pipeline, PostgreSQL and \
             the broker share the same CPUs, so a process's share says who the machine works \
             for.\n",
            m.cores
        );
        if let Some(s) = &self.saturation {
            let _ = writeln!(
                o,
                "| process | CPU seconds | share of the machine |\n| --- | --- | --- |"
            );
            let capacity = s.secs * m.cores as f64;
            for (name, secs) in &s.cpu {
                let _ = writeln!(
                    o,
                    "| {name} | {secs:.1} | {:.0} % |",
                    secs / capacity * 100.0
                );
            }
            let used: f64 = s.cpu.iter().map(|x| x.1).sum();
            let _ = writeln!(
                o,
                "| all of the above | {used:.1} | {:.0} % |\n",
                used / capacity * 100.0
            );
        }
        for t in &targets {
            let tag = match &t.verdict {
                Verdict::Pass => "met",
                Verdict::Miss => "MISSED",
                Verdict::Skipped(_) => continue,
            };
            let end = if t.diagnosis.ends_with('.') { "" } else { "." };
            let _ = writeln!(
                o,
                "- {} ({tag}, {}): {}{end}",
                t.what, t.figure, t.diagnosis
            );
        }
        o
    }

    fn md_notes(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n## Notes\n\n\
             - One command replaces `scripts/bench-cdc` and `scripts/bench-workers`. Two of the \
               latter's figures are not carried over: the 91-window writes emulated in \
               PostgreSQL (the Kafka Streams peer is the real comparison) and the timing of one \
               day rollover of 100,000 courses (0.75 s in that script's last run; it runs once \
               a day).\n\
             - Every clock includes the process's start-up (connections, group join, schema \
               registry), as a user restarting a stage would see it.\n\
             - The stages run with their defaults (a batch is what arrived while the previous one \
               was processed, at most REVIEWFLOW_BATCH_RECORDS = 5,000 records, with no linger: \
               REVIEWFLOW_BATCH_MS = 0); any REVIEWFLOW_* or KAFKA_* variable set \
               when `reviewflow bench` starts reaches every stage, so a tuning can be measured \
               the same way.\n\
             - Peers run through `bench/peers/run`; when it is missing or fails, the peer's line \
               says skipped, with the reason, and its target is not judged."
        );
    }

    fn md_saturation(&self, o: &mut String) {
        let Some(s) = &self.saturation else { return };
        let _ = writeln!(o, "\n## Saturation\n");
        let _ = writeln!(
            o,
            "Every stage (api, cdc, fraud, stats, verdicts) runs as its own process, a child of \
             the bench. A writer inserts reviews (transactions of up to 500 rows, random courses \
             among {}) and keeps at most {} written but not yet in course_stats, so the pipeline \
             is never idle and the writer never floods PostgreSQL. After {} s of warm-up, the \
             reviews that reached course_stats (counted by the stats worker's \
             `reviewflow_events_out_total{{output=\"applied\"}}`, plus any the fraud model \
             flagged) are counted for {} s.\n",
            thousands(self.sizes.courses as f64),
            thousands(self.sizes.in_flight as f64),
            self.sizes.warmup_secs,
            self.sizes.saturation_secs
        );
        let _ = writeln!(
            o,
            "| window | reviews | reviews/s | slowest second |\n| --- | --- | --- | --- |\n| {:.1} s | {} | {} | {}/s |",
            s.secs,
            thousands(s.reviews as f64),
            thousands(s.rate()),
            thousands(s.slowest_second)
        );
    }

    fn md_latency(&self, o: &mut String) {
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

    fn md_cdc(&self, o: &mut String) {
        let Some(c) = &self.cdc else { return };
        let _ = writeln!(o, "\n## CDC: a slot backlog into Kafka\n");
        let _ = writeln!(
            o,
            "Three slots are created before the backlog is written, one per consumer, so each \
             drains exactly the same {} inserts (transactions of 100 rows). pg_recvlogical \
             streams its slot with pgoutput (proto_version 1, the same publication) to \
             /dev/null up to the end LSN: the machine's decoding limit. `reviewflow cdc` starts \
             on its slot and the clock stops when the slot's confirmed position reaches the end \
             LSN, which it only does once Kafka acknowledged every change (acks=all, idempotent, \
             lz4); start-up and schema registration are inside. Debezium's PostgreSQL connector \
             (Kafka Connect, jars from Maven Central) drains the third slot.\n",
            thousands(c.backlog as f64)
        );
        let _ = writeln!(
            o,
            "| consumer | seconds | changes/s | reviewflow's ratio |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            o,
            "| pg_recvlogical (pgoutput to /dev/null) | {:.2} | {} | {:.1} % |",
            c.recvlogical_secs,
            thousands(c.recvlogical_rate()),
            c.ours_rate() / c.recvlogical_rate() * 100.0
        );
        let _ = writeln!(
            o,
            "| reviewflow cdc (slot to Kafka, acknowledged) | {:.2} | {} | - |",
            c.ours_secs,
            thousands(c.ours_rate())
        );
        let _ = match c.debezium.figures() {
            Some(d) => writeln!(
                o,
                "| Debezium PostgreSQL connector | {:.2} | {} | {:.2}x |",
                d.seconds,
                thousands(d.records_per_s),
                c.ours_rate() / d.records_per_s
            ),
            None => writeln!(
                o,
                "| Debezium PostgreSQL connector | {} | - | - |",
                peer_text(&c.debezium)
            ),
        };
    }

    fn md_workers(&self, o: &mut String) {
        if let Some(f) = &self.fraud {
            let _ = writeln!(o, "\n## Fraud worker\n");
            let _ = writeln!(
                o,
                "`reviewflow fraud` alone on the changes topic ({} changes: the courses' snapshot \
                 and the backlog), from its start until its group's committed offsets reach the \
                 end of every partition; outputs and offsets committed in Kafka transactions \
                 (default batches). Beside it, Kafka's `ProducerPerformance` from the broker's \
                 own jars writes as many records of the valid topic's mean size ({} bytes), \
                 transactional with the same transaction length ({} ms), acks=all, lz4, \
                 linger.ms=5: the broker's limit for that shape of work. It reads nothing and \
                 writes one record per input where the worker writes two (valid or fraud, and a \
                 verdict).\n",
                thousands(f.records as f64),
                f.record_bytes,
                ((f.secs * 1000.0) / f.transactions.max(1) as f64).round()
            );
            let _ = writeln!(
                o,
                "| fraud | changes/s | per CPU-second | transactions | flagged | ProducerPerformance | ratio |\n| --- | --- | --- | --- | --- | --- | --- |"
            );
            let rate = f.records as f64 / f.secs;
            let _ = writeln!(
                o,
                "| {:.2} s | {} | {} | {} | {} | {} | {} |",
                f.secs,
                thousands(rate),
                thousands(f.records as f64 / f.cpu_secs.max(1e-9)),
                f.transactions,
                f.flagged,
                f.producer_perf
                    .map_or("-".into(), |r| format!("{}/s", thousands(r))),
                f.producer_perf
                    .map_or("-".into(), |r| format!("{:.1} %", rate / r * 100.0))
            );
        }
        if let Some(s) = &self.stats {
            let _ = writeln!(o, "\n## Stats worker and the hopping-window version\n");
            let _ = writeln!(
                o,
                "`reviewflow stats` alone on the valid topic the fraud worker wrote ({} changes), \
                 from its start until it has consumed all of them; then the verdict sink fills \
                 review_verdicts and `verify` found 0 differences in {} courses. The peer is a \
                 Kafka Streams application of the original design (91-day hopping windows \
                 advancing by a day, state in RocksDB) consuming the same topic from its start, \
                 up to `--streams-records` changes{}: 91 window updates per change make it slow \
                 enough that the whole topic would take most of the run, so the rates are \
                 compared.\n",
                thousands(s.changes as f64),
                thousands(s.verified_courses as f64),
                s.streams
                    .figures()
                    .map(|k| format!(" (here {})", thousands(k.records as f64)))
                    .unwrap_or_default()
            );
            let rate = s.changes as f64 / s.secs;
            let _ = writeln!(
                o,
                "| consumer | seconds | changes/s | per CPU-second | ratio |\n| --- | --- | --- | --- | --- |"
            );
            let _ = writeln!(
                o,
                "| reviewflow stats | {:.2} | {} | {} | - |",
                s.secs,
                thousands(rate),
                thousands(s.changes as f64 / s.cpu_secs.max(1e-9))
            );
            let _ = match s.streams.figures() {
                Some(k) => writeln!(
                    o,
                    "| Kafka Streams, 91 hopping windows | {:.2} | {} | - | stats {:.1}x |",
                    k.seconds,
                    thousands(k.records_per_s),
                    rate / k.records_per_s
                ),
                None => writeln!(
                    o,
                    "| Kafka Streams, 91 hopping windows | {} | - | - | - |",
                    peer_text(&s.streams)
                ),
            };
            let _ = writeln!(o, "\n{}", pg_share(s));
            let _ = writeln!(o, "\n## Verify\n");
            let _ = writeln!(
                o,
                "`reviewflow verify` on the tables the workers wrote: the figures of {} courses \
                 against sql/truth.sql, and each of the {} rows of reviews against its newest \
                 verdict (digest, and the model's verdict recomputed from the row's text), in \
                 one pass: {:.1} s, 0 differences. Alone, on a database of its own: \
                 `scripts/bench-verify` (1,000,000 reviews).",
                thousands(s.verified_courses as f64),
                thousands(s.verified_reviews as f64),
                s.verify_secs
            );
        }
    }

    fn md_memory(&self, o: &mut String) {
        let peaks = self.peak_rss();
        if peaks.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## Memory\n");
        let _ = writeln!(
            o,
            "Peak resident set (VmHWM from /proc/<pid>/status) of each stage's process, read \
             before it was stopped, in each phase it ran in (a new process per phase; alone on \
             the backlog, a worker's consumer prefetches and its batches are full), with {} \
             courses in the data.\n",
            thousands(self.sizes.courses as f64)
        );
        let phases: Vec<&str> = ["snapshot", "backlog", "pipeline"]
            .into_iter()
            .filter(|p| self.memory.iter().any(|m| m.1 == *p))
            .collect();
        let _ = writeln!(
            o,
            "| stage | {} | peak |\n| --- |{} --- |",
            phases
                .iter()
                .map(|p| phase_title(p))
                .collect::<Vec<_>>()
                .join(" | "),
            " --- |".repeat(phases.len())
        );
        for (stage, bytes, _) in &peaks {
            let cells: Vec<String> = phases
                .iter()
                .map(|p| {
                    self.memory
                        .iter()
                        .filter(|m| m.0 == *stage && m.1 == *p)
                        .map(|m| mb(m.2 as f64 * 1024.0))
                        .next()
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            let _ = writeln!(o, "| {stage} | {} | {} |", cells.join(" | "), mb(*bytes));
        }
        let peers: Vec<String> = [
            self.cdc.as_ref().map(|c| &c.debezium),
            self.stats.as_ref().map(|s| &s.streams),
        ]
        .into_iter()
        .flatten()
        .filter_map(PeerOutcome::figures)
        .filter_map(|f| {
            f.peak_rss_kb
                .map(|k| format!("{} {}", f.peer, mb(k as f64 * 1024.0)))
        })
        .collect();
        if !peers.is_empty() {
            let _ = writeln!(o, "\nPeers, as their runner reports: {}.", peers.join(", "));
        }
    }
}

/// What the slowest hop spends its time on, and what would shorten it.
fn slowest_hop(p: &RatePoint) -> String {
    // The tail is what misses the target, so the hop with the largest p99.
    let Some((hop, p50, p99)) = p.hops.iter().max_by(|a, b| a.2.total_cmp(&b.2)) else {
        return "The hops were not measured.".into();
    };
    let why = if hop.contains("(fraud)") {
        "a batch (what arrived during the previous transaction) is one Kafka transaction: \
         produce, send_offsets_to_transaction and commit, a few round trips to the transaction \
         coordinator, and the next reader sees the records only once the commit markers are \
         written. Two fixed waits found with this command are gone: rdkafka's BaseProducer flush \
         inside commit_transaction polled in 100 ms steps that always ran to the end (every \
         transaction paid 100 ms; the worker now waits for its acknowledgements itself), and \
         librdkafka's 100 ms retry backoff when back-to-back transactions meet the previous \
         one's markers (CONCURRENT_TRANSACTIONS; now 5 ms). What would shorten it further: \
         overlapping the next batch's reading and judging with the current commit"
    } else if hop.contains("(stats)") {
        "the stats worker applies what arrived during its previous transaction in one \
         PostgreSQL transaction (set-based statements, every writer serialised on one row lock \
         so the 90-day figures are recomputed exactly), committed with its offsets and the \
         pg_notify. Its p50 is a few tens of milliseconds; its tail follows the machine's busiest \
         moments, since on 2 cores PostgreSQL's backends (its own commits, the verdict sink's, \
         the writer's inserts and the WAL decoding for cdc) and the broker share the CPUs. What \
         would shorten it: fewer statements per batch (course_stats recomputed from the day \
         buckets in the same statement that upserts them), and PostgreSQL not sharing two cores \
         with the rest"
    } else {
        "the reader's producer lingers 5 ms and waits for acks=all"
    };
    format!(
        "The hop with the longest tail is {hop} ({p50:.1} ms at p50, {p99:.1} ms at p99): {why}."
    )
}

fn hops_text(p: &RatePoint) -> String {
    if p.hops.is_empty() {
        return "not measured".into();
    }
    p.hops
        .iter()
        .map(|(hop, p50, p99)| format!("{hop} {p50:.1} / {p99:.1} ms"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn phase_title(phase: &str) -> &'static str {
    match phase {
        "snapshot" => "snapshot of the courses",
        "backlog" => "alone on the backlog",
        _ => "live pipeline (saturation, latency)",
    }
}

fn judge(ok: bool) -> Verdict {
    if ok {
        Verdict::Pass
    } else {
        Verdict::Miss
    }
}

fn skipped(what: &'static str, peer: &PeerOutcome) -> Target {
    Target {
        what,
        figure: "-".into(),
        verdict: Verdict::Skipped(match peer {
            PeerOutcome::Skipped(why) => why.clone(),
            PeerOutcome::Ran(_) => "not judged".into(),
        }),
        diagnosis: String::new(),
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

fn verdict_md(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "PASS".into(),
        Verdict::Miss => "**MISS**".into(),
        Verdict::Skipped(why) => format!("skipped: {why}"),
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
