//! Kubernetes-style label selectors over cluster labels, as `ListClusters` and rollout stages take
//! them: `env=prod,team!=data`, `tier in (a,b)`, `tier notin (c)`, `canary`, `!legacy`
//! (`=` and `==` are the same).

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the key is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed selector: every requirement must hold. The empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {message}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong, e.g. `"tier in a": expected a list in parentheses`.
    pub message: String,
}

impl Selector {
    /// Parses `s`.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let err = |message: String| SelectorError {
            selector: s.to_string(),
            message,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(s).map_err(err)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(err(
                    "empty requirement (two commas in a row, or a trailing comma)".into(),
                ));
            }
            requirements.push(parse_requirement(part).map_err(|m| err(format!("{part:?}: {m}")))?);
        }
        Ok(Selector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key_of(k)?, value_of(v)?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key_of(k)?, value_of(v)?));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim_start();
        for (op, notin) in [("notin", true), ("in", false)] {
            if let Some(list) = rest.strip_prefix(op) {
                let list = list.trim();
                let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
                    return Err(format!(
                        "expected a list in parentheses after `{op}`, e.g. {key} {op} (a,b)"
                    ));
                };
                let values = inner.split(',').map(value_of).collect::<Result<Vec<_>, _>>()?;
                if values.iter().all(String::is_empty) {
                    return Err(format!("`{op}` needs at least one value"));
                }
                let key = key_of(key)?;
                return Ok(if notin {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                });
            }
        }
        return Err("expected =, ==, !=, in or notin after the key".into());
    }
    Ok(Requirement::Exists(key_of(part)?))
}

fn key_of(k: &str) -> Result<String, String> {
    let k = k.trim();
    crate::config::check_label_key(k)?;
    Ok(k.to_string())
}

fn value_of(v: &str) -> Result<String, String> {
    let v = v.trim();
    crate::config::check_label_value(v)?;
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn every_operator() {
        let prod = labels(&[("env", "prod"), ("team", "web"), ("canary", "")]);
        let dev = labels(&[("env", "dev")]);
        assert!(sel("").matches(&prod));
        assert!(sel("env=prod").matches(&prod) && !sel("env=prod").matches(&dev));
        assert!(sel("env==prod,team=web").matches(&prod));
        assert!(sel("team!=data").matches(&prod) && sel("team!=data").matches(&dev));
        assert!(sel("env in (prod, staging)").matches(&prod) && !sel("env in (staging)").matches(&prod));
        assert!(sel("env notin (prod)").matches(&dev) && sel("team notin (x)").matches(&dev));
        assert!(sel("canary").matches(&prod) && !sel("canary").matches(&dev));
        assert!(sel("!canary").matches(&dev) && !sel("!canary").matches(&prod));
        assert!(sel("env in (dev,prod),!legacy").matches(&dev));
    }

    #[test]
    fn bad_selectors_explain() {
        for bad in [
            "env in prod",
            "env=prod,",
            "env in (a",
            "bad key=1",
            "env=a b",
            "env in ()",
            "env ~ x",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(!e.message.is_empty(), "{bad}: {e}");
        }
    }
}
