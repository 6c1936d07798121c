//! Shape-tolerant reading of CLI `--json` output, for tests written before the shape is fixed.

use crate::Error;

/// Every number in `json` stored under an object key for which `key_matches` is true, at any
/// depth. For example, the shared bytes in `strata --json system df -v` whatever its nesting:
/// `numbers_under_keys(out, |k| k.contains("shared"))`.
pub fn numbers_under_keys(
    json: &str,
    key_matches: impl Fn(&str) -> bool,
) -> Result<Vec<f64>, Error> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Invalid(format!("not JSON ({e}): {json}")))?;
    let mut out = Vec::new();
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if key_matches(k)
                        && let Some(n) = v.as_f64()
                    {
                        out.push(n);
                    }
                    stack.push(v);
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_at_any_depth() {
        let json = r#"{"images":[{"shared_size":5,"name":"x"}],"total":{"SharedBytes":7}}"#;
        let mut found =
            numbers_under_keys(json, |k| k.to_lowercase().contains("shared")).expect("json");
        found.sort_by(f64::total_cmp);
        assert_eq!(found, [5.0, 7.0]);
    }
}
