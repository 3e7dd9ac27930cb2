//! The report's digest: SHA-256 over the canonical JSON of every fact but the digest.
//!
//! Canonical JSON here is RFC 8785's (JCS) for what a report holds — objects with their
//! keys sorted, no whitespace, integers only, strings escaped as JSON requires and no
//! more — so anyone can recompute it from the JSON alone, without ferry
//! (docs/report.md gives a Python one-liner):
//!
//! 1. parse the report's JSON, take the `digest` field out of the top-level object;
//! 2. write the rest with every object's keys in ascending order (by code point) and no
//!    whitespace between tokens;
//! 3. SHA-256 of those UTF-8 bytes, in lowercase hex, after `sha256:`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::Report;

/// The digest `report` should carry: over its facts, its own `digest` left out.
pub fn of(report: &Report) -> String {
    let mut value = serde_json::to_value(report).expect("a report serializes to JSON");
    of_value(&mut value)
}

/// The digest of a report's JSON (`value`, whose `digest` field is taken out).
pub fn of_value(value: &mut Value) -> String {
    if let Value::Object(map) = value {
        map.remove("digest");
    }
    let mut text = String::new();
    canonical(value, &mut text);
    format!("sha256:{:x}", Sha256::digest(text.as_bytes()))
}

/// `value` written canonically: keys sorted, no whitespace.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        // Strings are escaped as serde_json writes them (the short escapes, `\u00xx`
        // for other control characters, nothing else), numbers are integers.
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_the_digest_left_out() {
        let mut a = json!({"b": [{"y": 1, "x": "é\n"}], "a": null, "digest": "sha256:old"});
        let mut b = json!({"a": null, "b": [{"x": "é\n", "y": 1}]});
        let mut text = String::new();
        a.as_object_mut().unwrap().remove("digest");
        canonical(&a, &mut text);
        assert_eq!(text, r#"{"a":null,"b":[{"x":"é\n","y":1}]}"#);
        assert_eq!(of_value(&mut a), of_value(&mut b));
        // The SHA-256 of that text, as `sha256sum` gives it.
        assert_eq!(
            of_value(&mut json!({})),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn one_changed_fact_changes_the_digest() {
        let mut a = json!({"runs": [{"state": "done"}]});
        let mut b = json!({"runs": [{"state": "unwound"}]});
        assert_ne!(of_value(&mut a), of_value(&mut b));
    }
}
