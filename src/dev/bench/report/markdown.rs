//! BENCHMARKS.md: the run's figures as Markdown, section by section (saturation, latency, CDC,
//! workers, memory), with the machine and the command that reproduces them.

use std::fmt::Write;

use super::{mb, peer_text, pg_share, thousands, PeerOutcome, Report, Verdict};

impl Report {
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
        let _ = writeln!(
            o,
            "The floor must be met; the aim is where the work heads. A latency target is judged \
             on the median of its rounds.\n"
        );
        let _ = writeln!(
            o,
            "| level | target | figure | verdict |\n| --- | --- | --- | --- |"
        );
        let targets = self.targets();
        for t in &targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                t.level.name(),
                t.what,
                t.figure,
                verdict_md(&t.verdict)
            );
        }
        self.md_saturation(&mut o);
        self.md_latency(&mut o);
        self.md_website(&mut o);
        self.md_drain(&mut o);
        self.md_rounds(&mut o);
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
            "With two instances, a second process of each worker (fraud, stats, verdicts) joins \
             its group while the writer keeps the pipeline full; once every group's coordinator \
             tells it Stable with both members (DescribeGroups; `groups settled` is how long \
             that took from the processes' start) and what was written meanwhile has drained, \
             the same warm-up and window follow. Every 100 ms `pg_stat_activity` is sampled \
             over the bench database's backends: the mean running a statement, and the mean of those waiting on a \
             heavyweight lock (`wait_event_type = 'Lock'`; advisory: the stats lock).\n"
        );
        let _ = writeln!(
            o,
            "| instances of each worker | groups settled | window | reviews | reviews/s | slowest second | longest pause | backends running | waiting on a lock | of which advisory |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for s in std::iter::once(s).chain(&self.scale_out) {
            let w = &s.lock_wait;
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} s | {} | {} | {}/s | {:.2} s at {:.1} s | {:.2} | {:.2} ({:.0} %) | {:.2} |",
                s.instances,
                s.settled_secs.map_or("-".into(), |t| format!("{t:.1} s")),
                s.secs,
                thousands(s.reviews as f64),
                thousands(s.rate()),
                thousands(s.slowest_second),
                s.longest_pause_secs,
                s.longest_pause_at_secs,
                w.active,
                w.waiting,
                w.share() * 100.0,
                w.advisory
            );
        }
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
        let (median, worst) = c.median_share();
        let _ = writeln!(
            o,
            "\nOne round is noisy, so after the live pipeline (nothing downstream running) \
             pg_recvlogical and reviewflow alternate on {} more backlog(s) of the same size, a \
             fresh slot for pg_recvlogical each time and cdc going on in its own; then once on \
             rows with {} bytes of incompressible content, which PostgreSQL stores out of line \
             (TOAST). Median share {:.1} %, worst {:.1} %.\n",
            c.rounds.len().saturating_sub(1),
            super::super::cdc::WIDE_BYTES,
            median * 100.0,
            worst * 100.0
        );
        let _ = writeln!(
            o,
            "| round | changes | content | pg_recvlogical | reviewflow cdc | reviewflow's share |\n| --- | --- | --- | --- | --- | --- |"
        );
        let rounds = c
            .rounds
            .iter()
            .enumerate()
            .map(|(i, r)| ((i + 1).to_string(), r));
        for (name, r) in rounds.chain(c.wide.iter().map(|w| ("wide rows".to_string(), w))) {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {:.2} s ({}/s) | {:.2} s ({}/s) | {:.1} % |",
                thousands(r.changes as f64),
                if r.content_bytes == 0 {
                    "a sentence".to_string()
                } else {
                    format!("{} bytes", r.content_bytes)
                },
                r.recvlogical_secs,
                thousands(r.changes as f64 / r.recvlogical_secs),
                r.ours_secs,
                thousands(r.changes as f64 / r.ours_secs),
                r.share() * 100.0
            );
        }
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

fn phase_title(phase: &str) -> &'static str {
    match phase {
        "snapshot" => "snapshot of the courses",
        "backlog" => "alone on the backlog",
        _ => "live pipeline (saturation, latency)",
    }
}

fn verdict_md(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "PASS".into(),
        Verdict::Miss => "**MISS**".into(),
        Verdict::Skipped(why) => format!("skipped: {why}"),
    }
}
