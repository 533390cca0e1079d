//! Kubernetes label selectors over cluster labels (`env=prod,team!=data,tier in (a,b),!legacy`):
//! the parser, with errors that name the position and what was expected, and the matcher.
//!
//! Syntax (as `kubectl -l`): requirements joined by `,` (AND), each one of `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1)`. `!=` and `notin`
//! also match clusters without the label. Keys are `[prefix/]name` (a DNS subdomain prefix of at
//! most 253 characters; a name of at most 63 letters, digits, `-`, `_`, `.`, starting and ending
//! alphanumeric); values are empty or follow the name rule. The empty selector matches everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed label selector: requirements that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is present (any value).
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: absent, or another value.
    NotEquals(String, String),
    /// `key in (a,b)`: present with one of the values.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)`: absent, or none of the values.
    NotIn(String, BTreeSet<String>),
}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SelectorError {
    /// 1-based character position in the selector text where the problem is (one past the end
    /// when the text ended too early).
    pub position: usize,
    /// What was expected or what is wrong, and how to fix it.
    pub message: String,
}

// === impl Selector ===

impl Selector {
    /// The selector that matches every cluster.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses Kubernetes label-selector text; empty (or blank) text matches everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser::new(text).selector()
    }

    /// Whether it has no requirement (matches every cluster).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Its requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().map(String::as_str).collect::<Vec<_>>().join(",");
        match self {
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
        }
    }
}

/// The canonical text (`env=prod,tier in (a,b)`); parses back to an equal selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Stored as its canonical text.
impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(|e| serde::de::Error::custom(format!("selector {text:?}: {e}")))
    }
}

// === lexer and parser ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    LParen,
    RParen,
    /// `=` or `==`.
    Eq,
    NotEq,
    Bang,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Comma => "','".into(),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::Eq => "'='".into(),
            Token::NotEq => "'!='".into(),
            Token::Bang => "'!'".into(),
        }
    }
}

struct Parser {
    /// Tokens with their 1-based character positions.
    tokens: Vec<(Token, usize)>,
    next: usize,
    /// One past the last character, 1-based.
    end: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let pos = i + 1;
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            let (tok, len) = match c {
                ',' => (Token::Comma, 1),
                '(' => (Token::LParen, 1),
                ')' => (Token::RParen, 1),
                '=' if chars.get(i + 1) == Some(&'=') => (Token::Eq, 2),
                '=' => (Token::Eq, 1),
                '!' if chars.get(i + 1) == Some(&'=') => (Token::NotEq, 2),
                '!' => (Token::Bang, 1),
                _ => {
                    let start = i;
                    let mut j = i;
                    while j < chars.len() && !chars[j].is_whitespace() && !",()=!".contains(chars[j]) {
                        j += 1;
                    }
                    (Token::Ident(chars[start..j].iter().collect()), j - start)
                }
            };
            tokens.push((tok, pos));
            i += len;
        }
        Self {
            tokens,
            next: 0,
            end: chars.len() + 1,
        }
    }

    fn peek(&self) -> Option<&(Token, usize)> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<(Token, usize)> {
        let t = self.tokens.get(self.next).cloned();
        self.next += 1;
        t
    }

    fn err<T>(&self, position: usize, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            position,
            message: message.into(),
        })
    }

    /// What was found at the current token, for messages.
    fn found(&self) -> (usize, String) {
        match self.peek() {
            Some((t, p)) => (*p, format!("found {}", t.describe())),
            None => (self.end, "found the end of the selector".into()),
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().is_none() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.bump() {
                None => return Ok(Selector { requirements }),
                Some((Token::Comma, _)) if self.peek().is_none() => {
                    return self.err(
                        self.end,
                        "expected a requirement after ','; remove the trailing comma",
                    )
                }
                Some((Token::Comma, _)) => {}
                Some((t, p)) => {
                    return self.err(
                        p,
                        format!(
                            "expected ',' or the end of the selector, found {}; join requirements with ','",
                            t.describe()
                        ),
                    )
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        match self.bump() {
            Some((Token::Bang, _)) => {
                let key = self.key("after '!'")?;
                Ok(Requirement::NotExists(key))
            }
            Some((Token::Ident(_), _)) => {
                self.next -= 1;
                let key = self.key("")?;
                self.operator(key)
            }
            Some((t, p)) => self.err(
                p,
                format!("expected a label key or '!key', found {}", t.describe()),
            ),
            None => {
                let (p, found) = self.found();
                self.err(p, format!("expected a label key or '!key', {found}"))
            }
        }
    }

    fn key(&mut self, context: &str) -> Result<String, SelectorError> {
        let sep = if context.is_empty() { "" } else { " " };
        match self.bump() {
            Some((Token::Ident(k), p)) => match validate_key(&k) {
                Ok(()) => Ok(k),
                Err(why) => self.err(p, format!("label key {k:?} is invalid: {why}")),
            },
            Some((t, p)) => self.err(
                p,
                format!("expected a label key{sep}{context}, found {}", t.describe()),
            ),
            None => self.err(
                self.end,
                format!("expected a label key{sep}{context}, found the end of the selector"),
            ),
        }
    }

    fn operator(&mut self, key: String) -> Result<Requirement, SelectorError> {
        match self.peek().cloned() {
            None | Some((Token::Comma, _)) => Ok(Requirement::Exists(key)),
            Some((Token::Eq, _)) => {
                self.next += 1;
                Ok(Requirement::Equals(key, self.value()?))
            }
            Some((Token::NotEq, _)) => {
                self.next += 1;
                Ok(Requirement::NotEquals(key, self.value()?))
            }
            Some((Token::Ident(op), _)) if op == "in" || op == "notin" => {
                self.next += 1;
                let values = self.set(&op)?;
                Ok(if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            Some((t, p)) => self.err(
                p,
                format!(
                    "expected '=', '==', '!=', 'in', 'notin', ',' or the end after key {key:?}, found {}",
                    t.describe()
                ),
            ),
        }
    }

    /// A value after `=`/`!=`: an identifier, or empty when a `,` or the end follows.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek().cloned() {
            None | Some((Token::Comma, _)) => Ok(String::new()),
            Some((Token::Ident(v), p)) => {
                self.next += 1;
                match validate_value(&v) {
                    Ok(()) => Ok(v),
                    Err(why) => self.err(p, format!("label value {v:?} is invalid: {why}")),
                }
            }
            Some((t, p)) => self.err(p, format!("expected a label value, found {}", t.describe())),
        }
    }

    /// `( v1, v2, ... )` after `in`/`notin`.
    fn set(&mut self, op: &str) -> Result<BTreeSet<String>, SelectorError> {
        match self.bump() {
            Some((Token::LParen, _)) => {}
            _ => {
                self.next -= 1;
                let (p, found) = self.found();
                return self.err(
                    p,
                    format!("expected '(' after '{op}', {found}; write `key {op} (a,b)`"),
                );
            }
        }
        let mut values = BTreeSet::new();
        loop {
            match self.bump() {
                Some((Token::Ident(v), p)) => match validate_value(&v) {
                    Ok(()) => {
                        values.insert(v);
                    }
                    Err(why) => return self.err(p, format!("label value {v:?} is invalid: {why}")),
                },
                Some((Token::RParen, p)) if values.is_empty() => {
                    return self.err(p, format!("'{op}' needs at least one value: `key {op} (a)`"))
                }
                other => {
                    let (p, found) = match other {
                        Some((t, p)) => (p, format!("found {}", t.describe())),
                        None => (self.end, "found the end of the selector".into()),
                    };
                    return self.err(p, format!("expected a value in the '{op}' set, {found}"));
                }
            }
            match self.bump() {
                Some((Token::Comma, _)) => {}
                Some((Token::RParen, _)) => return Ok(values),
                other => {
                    let (p, found) = match other {
                        Some((t, p)) => (p, format!("found {}", t.describe())),
                        None => (self.end, "found the end of the selector".into()),
                    };
                    return self.err(p, format!("expected ',' or ')' in the '{op}' set, {found}"));
                }
            }
        }
    }
}

/// A label name or value part: at most 63 characters of letters, digits, `-`, `_`, `.`,
/// starting and ending alphanumeric.
fn valid_name(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("{} characters, at most 63 allowed", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks a label (or taint) key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err("the prefix before '/' must be 1-253 characters".into());
        }
        let labels_ok = p.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if !labels_ok {
            return Err(format!(
                "the prefix {p:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
    }
    if name.is_empty() {
        return Err("the name must not be empty".into());
    }
    valid_name(name)
}

/// Checks a label value: empty, or a name (see [`validate_key`]'s name rule).
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    valid_name(value)
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
        Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn each_operator_matches_as_kubernetes_does() {
        let prod = labels(&[("env", "prod"), ("team", "web")]);
        let dev = labels(&[("env", "dev")]);
        let none = labels(&[]);
        let cases: &[(&str, [bool; 3])] = &[
            ("", [true, true, true]),
            ("env", [true, true, false]),
            ("!env", [false, false, true]),
            ("env=prod", [true, false, false]),
            ("env==prod", [true, false, false]),
            ("env!=prod", [false, true, true]),
            ("env in (prod,staging)", [true, false, false]),
            ("env notin (prod)", [false, true, true]),
            ("env=prod,team=web", [true, false, false]),
            ("env,!team", [false, true, false]),
            ("team=", [false, false, false]),
        ];
        for (text, want) in cases {
            let s = sel(text);
            let got = [s.matches(&prod), s.matches(&dev), s.matches(&none)];
            assert_eq!(&got, want, "{text:?}");
        }
        assert!(sel("team=").matches(&labels(&[("team", "")])));
    }

    #[test]
    fn whitespace_and_prefixes_are_accepted() {
        let s = sel(
            "  env = prod ,  tier  in ( a , b ),eks.amazonaws.com/nodegroup!=x,  !app.kubernetes.io/legacy ",
        );
        assert_eq!(
            s.to_string(),
            "env=prod,tier in (a,b),eks.amazonaws.com/nodegroup!=x,!app.kubernetes.io/legacy"
        );
        assert!(s.matches(&labels(&[("env", "prod"), ("tier", "b")])));
    }

    #[test]
    fn display_roundtrips() {
        for text in [
            "",
            "a",
            "!a",
            "a=b",
            "a!=b",
            "a in (x,y)",
            "a notin (x)",
            "a=,b",
            "x/y=z",
        ] {
            let s = sel(text);
            assert_eq!(sel(&s.to_string()), s, "{text:?}");
            let json = serde_json::to_string(&s).expect("serialise");
            assert_eq!(serde_json::from_str::<Selector>(&json).expect("deserialise"), s);
        }
        assert!(serde_json::from_str::<Selector>("\"env in\"").is_err());
    }

    #[test]
    fn errors_name_the_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("env=dev,,x", 9, "expected a label key"),
            ("env=dev,", 9, "trailing comma"),
            ("env in prod", 8, "expected '(' after 'in'"),
            ("env in ()", 9, "at least one value"),
            ("env in (a,", 11, "expected a value"),
            ("env in (a b)", 11, "expected ',' or ')'"),
            ("env=prod team=x", 10, "expected ',' or the end"),
            ("=prod", 1, "expected a label key"),
            ("!", 2, "expected a label key after '!'"),
            ("env=-bad", 5, "label value \"-bad\" is invalid"),
            ("Bad_Prefix/x=y", 1, "DNS subdomain"),
            ("env foo", 5, "expected '=', '==', '!='"),
            ("env=a=b", 6, "expected ',' or the end"),
        ];
        for (text, pos, needle) in cases {
            let e = Selector::parse(text).expect_err(text);
            assert_eq!(e.position, *pos, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn long_names_are_refused() {
        let long = "a".repeat(64);
        assert!(Selector::parse(&format!("{long}=x")).is_err());
        assert!(Selector::parse(&format!("x={long}")).is_err());
        assert!(Selector::parse(&format!("{}=x", "a".repeat(63))).is_ok());
    }

    /// The cases `ListClusters` was first written against, kept when the two selector modules
    /// became this one.
    #[test]
    fn list_clusters_cases() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sel = |s: &str| Selector::parse(s).unwrap();
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
