//! deploy/ for real: the shipped Prometheus rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`, each alert firing and not firing with the `for:` it ships
//! with), and Debian's `prometheus`, scraping a `reviewflow run`, finds a series for every
//! selector of the rules and of the Grafana dashboard, gets data for every panel, and fires
//! ReviewflowSlotInactive once cdc stops.
//!
//! How selectors are checked: the rules' expressions are read back from the running
//! Prometheus (GET /api/v1/rules, so what is checked is what it loaded), the dashboard's from
//! its JSON; `selectors` splits each expression into its metric selectors (name and label
//! matchers), and each must match a series (GET /api/v1/series). Dashboard variables are
//! given the values Grafana would: `$instance` all instances, `$__rate_interval` 1m.
//!
//! The live Prometheus loads the shipped recording rules as they are and a copy of the alerts
//! whose every `for:` is 2 s: the shipped minutes would make the test wait minutes for the
//! alert, and `promtool test rules` already holds those durations. promtool and prometheus
//! missing is a failure, never a skip: scripts/install-deps installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pipeline::Pipeline;
use serde_json::Value;

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// A Debian `prometheus` package binary; missing, the test fails naming the fix.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    match found {
        Some(path) => Command::new(path),
        None => panic!(
            "{name} is not installed: it comes with Debian's prometheus package \
             (scripts/install-deps installs it: apt-get install prometheus)"
        ),
    }
}

fn promtool(args: &[&str]) -> String {
    let out = tool("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} fails: {text}");
    text
}

fn alert_names() -> Vec<String> {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_tests_pass() {
    let checked = promtool(&["check", "rules", "recording.yml", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(&["check", "config", "prometheus.yml"]);
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert is tested both firing (an expected alert listed) and not (none listed).
    let tests = std::fs::read_to_string(deploy().join("prometheus/alerts.test.yml")).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let names = alert_names();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let cases: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {name}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{name} is tested not firing"
        );
        assert!(cases.contains(&"exp_alerts:"), "{name} is tested firing");
    }
}

/// The metric selectors of a PromQL expression, each a metric name with its label matchers
/// as written: what is left once functions, aggregations with their label lists, keywords,
/// numbers, ranges and strings are taken out.
fn selectors(expr: &str) -> Vec<String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 17] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let closing = |from: usize, open: u8, close: u8| {
        let (mut depth, mut j, mut quoted) = (0, from, None);
        while j < b.len() {
            match (quoted, b[j]) {
                (Some(q), c) if c == q => quoted = None,
                (Some(_), b'\\') => j += 1,
                (Some(_), _) => {}
                (None, c @ (b'"' | b'\'')) => quoted = Some(c),
                (None, c) if c == open => depth += 1,
                (None, c) if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        panic!("unbalanced {} in {expr}", open as char)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'[' {
            i = closing(i, b'[', b']') + 1;
        } else if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if word(c) {
            let start = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let j = next_non_space(i);
            let lower = name.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if b.get(j) == Some(&b'(') {
                    i = closing(j, b'(', b')') + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || b.get(j) == Some(&b'(') {
                // An aggregation, a binary operator or a function call: its arguments follow.
            } else if b.get(j) == Some(&b'{') {
                let end = closing(j, b'{', b'}');
                out.push(format!("{name}{}", &expr[j..=end]));
                i = end + 1;
            } else {
                out.push(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selectors_are_read_out_of_expressions() {
    assert_eq!(
        selectors(r#"up{job="reviewflow"} == 1 unless on (job, instance) reviewflow_slot_active"#),
        ["up{job=\"reviewflow\"}", "reviewflow_slot_active"]
    );
    assert_eq!(
        selectors(
            "histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x=~\"b}c\"}[5m]))) > 1e9"
        ),
        ["a_bucket{x=~\"b}c\"}"]
    );
    assert_eq!(
        selectors("r:lag:sum > 1000 and delta(r:lag:sum[10m:1m]) > 0"),
        ["r:lag:sum", "r:lag:sum"]
    );
}

/// The dashboard's expressions, as Grafana would send them, with the panel each is in; and
/// the templating queries' selectors.
fn dashboard() -> (Vec<(String, String)>, Vec<String>) {
    let text = std::fs::read_to_string(deploy().join("grafana/reviewflow.json")).unwrap();
    let board: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let fill = |e: &str| {
        e.replace("$instance", ".+")
            .replace("$__rate_interval", "1m")
    };
    let mut panels: Vec<&Value> = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut queries = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title} has a query");
        for t in targets {
            queries.push((title.clone(), fill(t["expr"].as_str().unwrap())));
        }
    }
    let mut variables = Vec::new();
    for v in board["templating"]["list"].as_array().unwrap() {
        let q = v["definition"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("variable {} is a label_values query: {q}", v["name"]));
        variables.extend(selectors(&fill(inner)));
    }
    (queries, variables)
}

/// Debian's prometheus on a free port, its data in `dir`, killed when dropped.
struct Prometheus {
    base: String,
    _process: common::Running,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let shipped = deploy().join("prometheus");
        let alerts = std::fs::read_to_string(shipped.join("alerts.yml")).unwrap();
        let quick: String = alerts
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 2s\n", &l[..l.len() - l.trim_start().len()]),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(dir.join("alerts.yml"), quick).unwrap();
        // Scrapes every 2 s with as long to answer: the slot gauges may take a second on a
        // busy machine. Rules are evaluated every second.
        let config = format!(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: reviewflow\n    static_configs:\n      - targets: [\"{target}\"]\n",
            shipped.join("recording.yml").display(),
            dir.join("alerts.yml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let listen = free_address();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let process = tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            base: format!("http://{listen}"),
            _process: common::Running(Some(process)),
            http: reqwest::Client::new(),
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .unwrap();
        let answer: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{path} {query:?}: {answer}");
        answer["data"].clone()
    }

    /// The instant query's samples that are numbers (histogram_quantile of nothing is NaN).
    async fn finite_samples(&self, expr: &str) -> usize {
        let data = self.api("query", &[("query", expr)]).await;
        let samples = data["result"].as_array().cloned().unwrap_or_default();
        samples
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .count()
    }

    async fn has_series(&self, selector: &str) -> bool {
        let data = self.api("series", &[("match[]", selector)]).await;
        data.as_array().is_some_and(|s| !s.is_empty())
    }

    /// The alerts named `name`, firing or pending, as (state, labels).
    async fn alerts(&self, name: &str) -> Vec<(String, Value)> {
        let data = self.api("alerts", &[]).await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| {
                (
                    a["state"].as_str().unwrap().to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_run_and_alerts_when_cdc_stops() {
    let mut p = Pipeline::new("prom_live").await;
    let dir = std::env::temp_dir().join(format!("rf-prometheus-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    p.log = Some(dir.join("run.log"));
    let address = free_address();
    let figures = p.output("course-stats");
    let running = p.spawn(
        "run",
        None,
        &[
            ("API_LISTEN", address.as_str()),
            ("REVIEWFLOW_STATS_TOPIC", figures.as_str()),
        ],
    );
    let base = format!("http://{address}");
    common::wait_healthy(&base, 120).await;
    let prom = Prometheus::start(&dir, &address);
    p.wait_for_snapshot().await;
    // Written once Prometheus has scraped: it must see the counters and the latency move.
    common::eventually("prometheus scraped run", 60, || async {
        let ready = prom.http.get(format!("{}/-/ready", prom.base)).send().await;
        ready.is_ok_and(|r| r.status().is_success())
            && prom.finite_samples("up{job=\"reviewflow\"} == 1").await > 0
    })
    .await;
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (course_id, user_id, rating, content)
         SELECT 1 + g % 3, 100 + g, 0.5 * (1 + g % 10), 'lesson ' || g FROM generate_series(1, 30) g",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;

    // Every selector of the rules (as Prometheus loaded them) and of the dashboard matches a
    // series. The consumer lag is computed every 10 s, and recorded series need an evaluation.
    let rules = prom.api("rules", &[]).await;
    let loaded: Vec<&Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let alerts = alert_names();
    let loaded_alerts = loaded.iter().filter(|r| r["type"] == "alerting").count();
    assert_eq!(
        loaded_alerts,
        alerts.len(),
        "every alert is loaded: {rules}"
    );
    let (panels, variables) = dashboard();
    let mut wanted: Vec<String> = variables;
    for rule in &loaded {
        wanted.extend(selectors(rule["query"].as_str().unwrap()));
    }
    for (_, expr) in &panels {
        wanted.extend(selectors(expr));
    }
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() > 10, "{wanted:?}");
    let mut missing = wanted.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !missing.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for s in missing {
            if !prom.has_series(&s).await {
                still.push(s);
            }
        }
        missing = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "selectors matching no series: {missing:?}"
    );

    // Every panel's query returns a number, and every rule evaluates without error.
    for (title, expr) in &panels {
        common::eventually(
            &format!("panel {title:?} shows data: {expr}"),
            20,
            || async { prom.finite_samples(expr).await > 0 },
        )
        .await;
    }
    let rules = prom.api("rules", &[]).await;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }
    assert!(
        prom.alerts("ReviewflowSlotInactive").await.is_empty(),
        "no slot is inactive while cdc runs"
    );

    // cdc stops: a table switched to REPLICA IDENTITY DEFAULT is refused at the next change,
    // which needs a person, so the stage stays stopped while the API keeps answering.
    db.batch_execute(
        "ALTER TABLE reviews REPLICA IDENTITY DEFAULT;
         INSERT INTO reviews (course_id, user_id, rating) VALUES (1, 999, 4.0)",
    )
    .await
    .unwrap();
    let slot = p.slot();
    common::eventually(
        "ReviewflowSlotInactive fires for cdc's slot",
        60,
        || async {
            prom.alerts("ReviewflowSlotInactive")
                .await
                .iter()
                .any(|(state, labels)| state == "firing" && labels["slot"] == slot.as_str())
        },
    )
    .await;
    let inactive = prom.alerts("ReviewflowSlotInactive").await;
    assert_eq!(
        inactive.len(),
        1,
        "the course_stats reader's slot is read: {inactive:?}"
    );
    common::eventually("ReviewflowStageDown fires for cdc", 30, || async {
        prom.alerts("ReviewflowStageDown")
            .await
            .iter()
            .any(|(state, labels)| state == "firing" && labels["stage"] == "cdc")
    })
    .await;
    // The change cdc refused waits in the slot, and its age is the slot's time lag.
    let waiting = format!("reviewflow_slot_time_lag_seconds{{slot=\"{slot}\"}} > 1");
    common::eventually("the slot's time lag grows", 30, || async {
        prom.finite_samples(&waiting).await > 0
    })
    .await;

    p.stop(running).await;
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
