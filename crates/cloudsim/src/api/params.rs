//! A request's parameters, read the way CloudStack reads them: from the query string
//! and the form body alike, names matched case-insensitively, an empty value taken as
//! absent, and `map[i].key=value` parameters grouped by index.

use std::collections::BTreeMap;

use crate::error::CsError;

/// A request's decoded parameters, in order, with names as sent.
pub struct Params {
    pub pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Params { pairs }
    }

    /// The value of `name`, matched case-insensitively as CloudStack does.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, command: &str, name: &str) -> Result<&str, CsError> {
        self.get(name)
            .ok_or_else(|| CsError::missing(command, name))
    }

    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.get(name)
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(default)
    }

    /// A numeric parameter: a bad value is CloudStack's "invalid value" refusal.
    pub fn long(&self, command: &str, name: &str) -> Result<Option<i64>, CsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| CsError::bad_id(command, name, v)),
        }
    }

    /// `map[i].key=value` parameters grouped by index: `details`, `iptonetworklist`.
    pub fn map(&self, prefix: &str) -> BTreeMap<u32, BTreeMap<String, String>> {
        let mut out: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let lower = k.to_lowercase();
            let Some(rest) = lower.strip_prefix(&format!("{prefix}[")) else {
                continue;
            };
            let Some((index, key)) = rest.split_once("].") else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            // Keep the original spelling of the key (cpuNumber) for the details map.
            let original_key = &k[k.len() - key.len()..];
            out.entry(index)
                .or_default()
                .insert(original_key.to_string(), v.clone());
        }
        out
    }
}
