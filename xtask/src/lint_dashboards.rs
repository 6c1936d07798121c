//! The conventions every Grafana dashboard in `dashboards/grafana/` follows, checked
//! (`cargo xtask lint-dashboards`, and `daemon/tests/dashboards.rs`, which includes this file
//! with `#[path]` so CI runs it with the other tests and can reuse [`queries`]):
//!
//! - a `uid`, a title and a `schemaVersion`;
//! - a `datasource` variable of type datasource (Prometheus) that every panel, target and query
//!   variable uses, so the dashboard works against any Prometheus without edits;
//! - `instance` and `container` query variables;
//! - `rate`, `irate` and `increase` over `$__rate_interval` (or `$__range`/`$__interval`), never a
//!   fixed window, which is wrong at some scrape interval or zoom level;
//! - a unit and a description on every panel;
//! - no hard-coded hosts: no IP addresses, `localhost` or URLs anywhere, and `instance`
//!   matchers only on variables;
//! - a panel reading the eBPF probe's copy-up families (`strata_copyup_*`) says so with
//!   [`PROBE_MARKER`] in its description, and only such panels do: they are empty on hosts
//!   where the probe cannot load, and the end-to-end test allows exactly those to be empty.
//!
//! Pure functions of the JSON (`serde_json` and `std` only), so both crates can include it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The sentence that marks a panel as depending on the eBPF copy-up probe.
pub const PROBE_MARKER: &str = "Needs the eBPF copy-up probe";

/// The variables every dashboard has.
const REQUIRED_VARIABLES: [&str; 3] = ["datasource", "instance", "container"];

/// Functions whose range must follow the dashboard's interval, not a fixed duration.
const RATE_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];

/// Grafana range variables allowed in a rate window.
const RANGE_VARIABLES: [&str; 3] = ["$__rate_interval", "$__range", "$__interval"];

/// A dashboard file and its JSON model.
#[derive(Debug)]
pub struct Dashboard {
    pub file: PathBuf,
    pub json: Value,
}

/// One panel target's query.
#[derive(Debug)]
pub struct PanelQuery {
    /// `file: panel "title" (refId)`, for messages.
    pub location: String,
    /// The panel's description carries [`PROBE_MARKER`].
    pub needs_probe: bool,
    pub expr: String,
}

/// Every `*.json` under `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Dashboard>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no dashboards (*.json) in {}", dir.display()));
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let json = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            Ok(Dashboard { file, json })
        })
        .collect()
}

/// Lints every dashboard under `dir`: `Ok(summary)`, or `Err(report)` listing each violation
/// on its own line.
pub fn check_dir(dir: &Path) -> Result<String, String> {
    let dashboards = load_dir(dir)?;
    let violations: Vec<String> = dashboards.iter().flat_map(lint).collect();
    if violations.is_empty() {
        let panels: usize = dashboards.iter().map(|d| panels(&d.json).len()).sum();
        Ok(format!(
            "{} dashboards, {panels} panels: conventions followed",
            dashboards.len()
        ))
    } else {
        let mut report = format!("{} dashboard convention violations:\n", violations.len());
        for v in &violations {
            let _ = writeln!(report, "  {v}");
        }
        Err(report)
    }
}

/// Panels, with those inside collapsed rows, rows themselves excluded.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in array(dashboard, "panels") {
        if panel["type"] == "row" {
            out.extend(array(panel, "panels"));
        } else {
            out.push(panel);
        }
    }
    out
}

/// Every panel target's expression.
pub fn queries(dashboard: &Dashboard) -> Vec<PanelQuery> {
    let name = file_name(&dashboard.file);
    let mut out = Vec::new();
    for panel in panels(&dashboard.json) {
        let needs_probe = text(panel, "description").contains(PROBE_MARKER);
        for target in array(panel, "targets") {
            out.push(PanelQuery {
                location: format!(
                    "{name}: panel \"{}\" ({})",
                    text(panel, "title"),
                    text(target, "refId")
                ),
                needs_probe,
                expr: text(target, "expr").to_owned(),
            });
        }
    }
    out
}

/// `(name, query)` of each query variable (`label_values(...)` and the like).
pub fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    array(&dashboard["templating"], "list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => text(q, "query").to_owned(),
            };
            (text(v, "name").to_owned(), query)
        })
        .collect()
}

/// Whether an expression reads the probe's copy-up families.
pub fn uses_probe(expr: &str) -> bool {
    expr.contains("strata_copyup_")
}

/// The violations of one dashboard, each naming the file and panel.
pub fn lint(dashboard: &Dashboard) -> Vec<String> {
    let name = file_name(&dashboard.file);
    let json = &dashboard.json;
    let mut out = Vec::new();
    for key in ["uid", "title"] {
        if text(json, key).is_empty() {
            out.push(format!("no {key}"));
        }
    }
    if !json["schemaVersion"].is_u64() {
        out.push("no schemaVersion".to_owned());
    }
    out.extend(variable_violations(json));
    let mut ids = HashSet::new();
    for panel in panels(json) {
        if !ids.insert(panel["id"].to_string()) {
            out.push(format!("panel \"{}\": duplicate id", text(panel, "title")));
        }
        out.extend(panel_violations(panel));
    }
    let mut strings = Vec::new();
    collect_strings(json, &mut strings);
    for s in strings {
        if let Some(host) = hard_coded_host(s) {
            out.push(format!("hard-coded host `{host}` in \"{s}\""));
        }
    }
    let mut out: Vec<String> = out.into_iter().map(|v| format!("{name}: {v}")).collect();
    // Query violations name their file and panel already.
    for query in queries(dashboard) {
        let mut problems = expr_problems(&query.expr);
        if query.expr.trim().is_empty() {
            problems.push("empty query".to_owned());
        }
        if uses_probe(&query.expr) && !query.needs_probe {
            problems.push(format!(
                "reads strata_copyup_* but the panel's description lacks \"{PROBE_MARKER}\""
            ));
        }
        out.extend(
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", query.location)),
        );
    }
    out
}

/// The template variables: `datasource`, `instance` and `container`, the query variables on
/// `$datasource`.
fn variable_violations(json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let variables = array(&json["templating"], "list");
    for required in REQUIRED_VARIABLES {
        if !variables.iter().any(|v| v["name"] == required) {
            out.push(format!("no `{required}` variable"));
        }
    }
    for v in variables {
        let var = text(v, "name");
        match text(v, "type") {
            "datasource" if var == "datasource" && v["query"] != "prometheus" => {
                out.push("the `datasource` variable must list Prometheus datasources".into());
            }
            "query" if !is_datasource_variable(&v["datasource"]) => {
                out.push(format!("variable `{var}` does not use $datasource"));
            }
            _ => {}
        }
        if var == "datasource" && text(v, "type") != "datasource" {
            out.push("the `datasource` variable must be of type datasource".into());
        }
    }
    if let Some((_, query)) = variable_queries(json)
        .into_iter()
        .find(|(n, _)| n == "container")
        && !(query.contains("strata_container_info") && query.contains("name"))
    {
        out.push(
            "the `container` variable must list names: label_values(strata_container_info, name)"
                .into(),
        );
    }
    out
}

/// Description, unit, datasource and the probe marker of one panel.
fn panel_violations(panel: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if text(panel, "description").trim().is_empty() {
        out.push("no description".to_owned());
    }
    if text(&panel["fieldConfig"]["defaults"], "unit").is_empty() {
        out.push("no unit (fieldConfig.defaults.unit)".to_owned());
    }
    if !is_datasource_variable(&panel["datasource"]) {
        out.push("datasource is not ${datasource}".to_owned());
    }
    let targets = array(panel, "targets");
    if targets.is_empty() {
        out.push("no queries".to_owned());
    }
    for target in targets {
        if !target["datasource"].is_null() && !is_datasource_variable(&target["datasource"]) {
            out.push(format!(
                "query {}: datasource is not ${{datasource}}",
                text(target, "refId")
            ));
        }
    }
    let reads_probe = targets.iter().any(|t| uses_probe(text(t, "expr")));
    if text(panel, "description").contains(PROBE_MARKER) && !reads_probe {
        out.push(format!(
            "says \"{PROBE_MARKER}\" but reads no strata_copyup_* family"
        ));
    }
    let title = text(panel, "title");
    out.into_iter()
        .map(|v| format!("panel \"{title}\": {v}"))
        .collect()
}

/// Fixed rate windows and literal `instance` matchers in one expression.
fn expr_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    // The function (or `by`/`on` keyword) each open parenthesis belongs to.
    let mut calls: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '(' => {
                let before: String = chars[..i].iter().collect();
                let name: String = before
                    .trim_end()
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                calls.push(name);
            }
            ')' => {
                calls.pop();
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .map_or(chars.len(), |p| i + p);
                let window: String = chars[i + 1..end].iter().collect();
                let function = calls.last().map_or("", String::as_str);
                if RATE_FUNCTIONS.contains(&function) && !RANGE_VARIABLES.contains(&window.trim()) {
                    problems.push(format!(
                        "{function}() over a fixed window [{window}]: use $__rate_interval"
                    ));
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    let mut rest = expr;
    while let Some(at) = rest.find("instance") {
        rest = &rest[at + "instance".len()..];
        let matcher = rest.trim_start();
        let Some(op) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| matcher.starts_with(op))
        else {
            continue;
        };
        let value = matcher[op.len()..].trim_start();
        if let Some(value) = value.strip_prefix('"')
            && !value.starts_with('$')
        {
            let literal: String = value.chars().take_while(|&c| c != '"').collect();
            problems.push(format!(
                "instance matcher on a literal \"{literal}\": use $instance"
            ));
        }
    }
    problems
}

/// The index of the closing quote of the string starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i
}

/// An IPv4 address, `localhost` or a URL in a string.
fn hard_coded_host(s: &str) -> Option<String> {
    if s.contains("://") {
        return Some("URL".to_owned());
    }
    if s.to_ascii_lowercase().contains("localhost") {
        return Some("localhost".to_owned());
    }
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|token| {
            let parts: Vec<&str> = token.split('.').collect();
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u8>().is_ok())
        })
        .map(str::to_owned)
}

fn is_datasource_variable(datasource: &Value) -> bool {
    let uid = match datasource {
        Value::String(s) => s.as_str(),
        d => text(d, "uid"),
    };
    matches!(uid, "${datasource}" | "$datasource")
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_windows_and_literal_instances_are_flagged() {
        assert!(
            expr_problems(r#"sum(rate(x{instance=~"$instance"}[$__rate_interval]))"#).is_empty()
        );
        assert!(expr_problems("predict_linear(x[6h], 3600)").is_empty());
        assert_eq!(
            expr_problems(r#"sum by (kind) (rate(x{a="(["}[5m]))"#).len(),
            1
        );
        assert_eq!(expr_problems(r#"x{instance="10.0.0.1:9750"}"#).len(), 1);
    }

    #[test]
    fn hosts_are_found_and_histogram_bounds_are_not() {
        assert_eq!(hard_coded_host("up 10.1.2.3:9750"), Some("10.1.2.3".into()));
        assert!(hard_coded_host("le=\"1.073741824\" v1.2.3").is_none());
        assert!(hard_coded_host("http://prometheus:9090").is_some());
    }
}
