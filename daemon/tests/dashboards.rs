//! The Grafana dashboards and the alert rules of `dashboards/`, against a real Prometheus
//! (Debian's) scraping a real `stratad` that ran a workload: every panel query, template
//! variable and alert expression parses, every panel query returns data, every alert rule
//! evaluates without error and links a runbook section that exists; `promtool` checks and
//! unit-tests the rules; the dashboards follow the conventions of `cargo xtask lint-dashboards`.
//!
//! Guards against a renamed metric or label, or a typo in a query, silently emptying a panel or
//! disarming an alert: Grafana and Prometheus both accept a query for a series that does not
//! exist and show nothing. One exception: panels reading the eBPF probe's copy-up families
//! (their description says so, see `lint_dashboards::PROBE_MARKER`) are empty on hosts where
//! the probe cannot load (`strata_probe_up` 0, as here); their queries must still parse, and
//! `cargo xtask vm-test` checks the copy-up figures where the probe runs.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

#[path = "../../xtask/src/dashboard_queries.rs"]
mod dashboard_queries;
#[path = "../../xtask/src/lint_dashboards.rs"]
mod lint_dashboards;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::{Stratad, busybox_image, find_program, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGE: &str = "busybox/dashboards:latest";

/// Every alert of `alerts.yml`; docs/metrics.md has a runbook section for each.
const ALERTS: &[&str] = &[
    "StrataStoreFilesystemFillingUp",
    "StrataStoreFilesystemAlmostFull",
    "StrataStoreFilesystemFilesFillingUp",
    "StrataStoreFilesystemAlmostOutOfFiles",
    "StrataContainerRWLayerGrowing",
    "StrataCopyUpStorm",
    "StrataCopyUpSlow",
    "StrataProbeDown",
    "StrataDaemonDown",
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool() -> PathBuf {
    find_program("promtool").expect(
        "promtool not found: install Debian's prometheus package (`cargo xtask test` and \
         .ci/run do)",
    )
}

#[test]
fn dashboards_follow_the_conventions() {
    if let Err(report) = lint_dashboards::check_dir(&repository().join("dashboards/grafana")) {
        panic!("{report}");
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repository().join("dashboards/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_panel_query_and_alert_works_against_a_real_prometheus() {
    require_root("stratad mounts overlayfs");
    let d = Stratad::start(STRATAD);
    let instance = d.metrics_addr().to_string();
    let prometheus = Prometheus::start(
        d.metrics_addr(),
        &repository().join("dashboards/prometheus/alerts.yml"),
    );

    // The workload: two containers, copy-ups through exec, a volume written.
    d.import(STRATA, &busybox_image(IMAGE));
    d.strata_ok(
        STRATA,
        &[
            "container",
            "create",
            "--name",
            "w",
            "-v",
            "vol:/vol",
            IMAGE,
        ],
    );
    d.strata_ok(STRATA, &["container", "create", "--name", "idle", IMAGE]);
    let script = "echo x >> /data/lower.txt && chmod 600 /etc/motd && echo v > /vol/f";
    let out = d
        .command(STRATA)
        .args(["container", "exec", "w", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A few scrapes with the scanner's figures in them, so rate() and deriv() have two points.
    prometheus.wait_for(
        &[
            "min(count_over_time(strata_probe_up[1m])) >= 5",
            "strata_container_copied_up_files > 0",
            "strata_volume_bytes > 0",
            "min(count_over_time(strata_container_rw_bytes[1m])) >= 3",
        ],
        Duration::from_mins(1),
    );
    let probe_up = prometheus.query("strata_probe_up")["data"]["result"][0]["value"][1] == "1";

    let (mut failures, probe_only) = check_panels(&prometheus, &instance, probe_up);
    failures.extend(check_alerts(&prometheus));
    if !probe_only.is_empty() {
        eprintln!(
            "strata_probe_up is 0 here: {} probe panel queries parsed but have no data \
             (vm-test covers them):\n  {}",
            probe_only.len(),
            probe_only.join("\n  ")
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n--- prometheus log ---\n{}",
        failures.len(),
        failures.join("\n"),
        prometheus.log_tail()
    );
}

/// Every template variable and panel query of both dashboards, with `container` all and "w":
/// the failures, and the probe panels' queries left empty because the probe is down.
fn check_panels(
    prometheus: &Prometheus,
    instance: &str,
    probe_up: bool,
) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut probe_only = Vec::new();
    let dashboards = lint_dashboards::load_dir(&repository().join("dashboards/grafana")).unwrap();
    assert_eq!(
        dashboards.len(),
        2,
        "the Copy-on-write and Capacity dashboards"
    );
    for dashboard in &dashboards {
        for (name, query) in lint_dashboards::variable_queries(&dashboard.json) {
            let values = prometheus.label_values(&substitute(&query, instance, ".*"));
            let expected = if name == "container" { "w" } else { instance };
            if !values.iter().any(|v| v == expected) {
                failures.push(format!(
                    "variable {name} ({query}): {values:?} lacks {expected}"
                ));
            }
        }
        for query in lint_dashboards::queries(dashboard) {
            let containers: &[&str] = if query.expr.contains("$container") {
                &[".*", "w"]
            } else {
                &[".*"]
            };
            for container in containers {
                let expr = substitute(&query.expr, instance, container);
                let response = prometheus.query(&expr);
                let location = format!("{} with container={container}", query.location);
                if response["status"] != "success" {
                    failures.push(format!("{location}: {}\n    {expr}", response["error"]));
                } else if response["data"]["result"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                {
                    if !probe_up && query.needs_probe && lint_dashboards::uses_probe(&expr) {
                        probe_only.push(location);
                    } else {
                        failures.push(format!("{location}: no data\n    {expr}"));
                    }
                }
            }
        }
    }
    (failures, probe_only)
}

/// The alert rules as Prometheus loaded them: all of [`ALERTS`], each expression parsing and
/// evaluating without error, annotated, and linking a section of docs/metrics.md.
fn check_alerts(prometheus: &Prometheus) -> Vec<String> {
    let mut failures = Vec::new();
    let runbook = std::fs::read_to_string(repository().join("docs/metrics.md")).unwrap();
    let anchors = heading_anchors(&runbook);
    let rules = prometheus.get("/api/v1/rules");
    let mut alerts = BTreeSet::new();
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap();
            alerts.insert(name.to_owned());
            let response = prometheus.query(rule["query"].as_str().unwrap());
            if response["status"] != "success" {
                failures.push(format!("alert {name}: {}", response["error"]));
            }
            if rule["health"] != "ok" {
                failures.push(format!(
                    "alert {name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            let annotations = &rule["annotations"];
            if annotations["summary"].as_str().is_none_or(str::is_empty)
                || !annotations["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("$value"))
            {
                failures.push(format!(
                    "alert {name}: needs a summary and a description with $value"
                ));
            }
            let runbook_url = annotations["runbook_url"].as_str().unwrap_or("");
            match runbook_url.split_once('#') {
                Some(("docs/metrics.md", anchor)) if anchors.contains(anchor) => {}
                _ => failures.push(format!(
                    "alert {name}: runbook_url {runbook_url:?} names no section of docs/metrics.md"
                )),
            }
        }
    }
    let expected: BTreeSet<String> = ALERTS.iter().map(|&a| a.to_owned()).collect();
    assert_eq!(alerts, expected, "the alerts Prometheus loaded");
    failures
}

/// A panel query as Grafana would send it, for the instance under test.
fn substitute(expr: &str, instance: &str, container: &str) -> String {
    dashboard_queries::substitute(expr, instance, container).unwrap_or_else(|e| panic!("{e}"))
}

/// GitHub's anchors for the Markdown headings of a document.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Debian's Prometheus on a loopback port, scraping one target every second with the alert
/// rules loaded; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &Path) -> Self {
        let prometheus = find_program("prometheus")
            .expect("prometheus not found: install Debian's prometheus package");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - \"{}\"\n\
                 scrape_configs:\n  - job_name: strata\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(me.addr, "/-/ready").is_none_or(|(status, _)| status != 200) {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", me.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                me.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// The JSON of an API call, whatever its status code (errors are JSON too).
    fn get(&self, path_and_query: &str) -> Value {
        let (status, body) = http_get(self.addr, path_and_query)
            .unwrap_or_else(|| panic!("GET {path_and_query}: no answer"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {status}, not JSON ({e}): {body}"))
    }

    /// An instant query.
    fn query(&self, expr: &str) -> Value {
        self.get(&format!(
            "/api/v1/query?query={}",
            dashboard_queries::url_encode(expr)
        ))
    }

    /// `label_values(selector, label)`, as Grafana's Prometheus datasource runs it.
    fn label_values(&self, variable_query: &str) -> Vec<String> {
        let (selector, label) = variable_query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(selector, label): {variable_query}"));
        let response = self.get(&format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            dashboard_queries::url_encode(selector.trim())
        ));
        assert_eq!(
            response["status"], "success",
            "{variable_query}: {response}"
        );
        response["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until every query returns data.
    fn wait_for(&self, queries: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for query in queries {
            while self.query(query)["data"]["result"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                assert!(
                    Instant::now() < deadline,
                    "no data for {query} after {timeout:?}:\n{}",
                    self.log_tail()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET` over HTTP/1.0 (the server closes the connection after the body): status and body.
fn http_get(addr: SocketAddr, path_and_query: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        conn,
        "GET {path_and_query} HTTP/1.0\r\nHost: prometheus\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
