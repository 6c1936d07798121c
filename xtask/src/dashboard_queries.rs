//! Grafana template substitution for running dashboard queries against Prometheus directly: the
//! same replacements as `daemon/tests/dashboards.rs` (`$__rate_interval` → `1m`,
//! `$__interval` → `15s`, `$__range` → `5m`, `$instance` and `$container` → the given values),
//! and the URL encoding of a query for `/api/v1/query`. `std` only, so the end-to-end test can
//! include this file with `#[path]` like it includes `lint_dashboards.rs`.

/// `expr` with Grafana's variables replaced; `Err` names a variable left over.
pub fn substitute(expr: &str, instance: &str, container: &str) -> Result<String, String> {
    let mut out = expr.to_owned();
    for (variable, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "5m"),
        ("instance", instance),
        ("container", container),
    ] {
        out = out
            .replace(&format!("${{{variable}}}"), value)
            .replace(&format!("${variable}"), value);
    }
    if out.contains('$') {
        return Err(format!("unknown variable in {expr}"));
    }
    Ok(out)
}

/// Percent-encodes `text` for a URL query value: everything but RFC 3986's unreserved
/// characters.
pub fn url_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String");
        }
    }
    out
}
