//! The CLI's input files and values, checked before any call: node group templates (YAML in EKS
//! CreateNodegroup field names) and rollout specs (YAML mapped onto `CreateRolloutRequest`), plus
//! the value syntaxes flags and files share (durations, surge, on-blocked policy, concurrency).
//!
//! Every error names the file, the line and column, the field path and the fix. What can be
//! checked locally is checked here; the coordinator validates again.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use flotilla_proto::fleet::v1 as pb;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// An invalid input file: where, which field, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    /// The field path, e.g. `scalingConfig.minSize` or `stages[1].soak`; empty for the whole file.
    pub path: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, ": field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl SpecError {
    fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_owned(),
            location: None,
            path: String::new(),
            message: message.into(),
        }
    }
}

/// Parses `text` (the contents of `file`) as YAML into `T`, turning serde errors into [`SpecError`]s
/// with location, field path and advice.
fn parse_yaml<T: de::DeserializeOwned>(file: &Path, text: &str, example: &str) -> Result<T, SpecError> {
    if text
        .trim()
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(SpecError::whole_file(
            file,
            format!("the file is empty; write YAML like:\n{example}"),
        ));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let text = strip_location(&inner.to_string());
        // serde_yaml starts its message with the path; it is printed separately.
        let text = match text.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest,
            _ => &text,
        };
        let message = advise(text);
        SpecError {
            file: file.to_owned(),
            location,
            path,
            message,
        }
    })
}

/// serde_yaml appends ` at line L column C` to its messages; the location is printed up front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Adds the fix to serde's generic messages.
fn advise(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message}; remove the field or fix its spelling (names are camelCase, as EKS spells them)")
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!("missing field {rest}; add it")
    } else {
        message.to_owned()
    }
}

/// Reads a file for parsing; an unreadable file is an input error naming the path.
fn read(file: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(file)
        .map_err(|e| SpecError::whole_file(file, format!("cannot read the file: {e}; check the path")))
}

// === Values shared by flags and files ===

/// Parses a duration such as `90s`, `10m`, `1h30m` or `2h 5m`; it must be positive.
pub fn parse_duration(s: &str) -> Result<prost_types::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` has no unit; write e.g. `{s}s` or `{s}m`"));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. `90s`, `10m` or `1h30m`"))?;
    if d.is_negative() || d.is_zero() {
        return Err(format!("`{s}` must be longer than zero; write e.g. `90s`"));
    }
    Ok(prost_types::Duration {
        seconds: d.as_secs(),
        nanos: d.subsec_nanos(),
    })
}

/// How much to surge each Deployment: a percentage of its replicas or a count of extra pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surge {
    /// `100%`: a share of the current replicas.
    Percent(u32),
    /// `2`: extra pods per Deployment.
    Count(u32),
}

impl Surge {
    fn to_proto(self) -> pb::migration_params::Surge {
        match self {
            Surge::Percent(p) => pb::migration_params::Surge::SurgePercent(p),
            Surge::Count(n) => pb::migration_params::Surge::SurgeCount(n),
        }
    }
}

/// Parses `--surge` / `surge`: `100%` (1–1000%) or a count of extra pods (at least 1).
pub fn parse_surge(s: &str) -> Result<Surge, String> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        match p.trim().parse::<u32>() {
            Ok(p) if (1..=1000).contains(&p) => Ok(Surge::Percent(p)),
            _ => Err(format!(
                "`{s}` is not a surge percentage; write 1% to 1000%, e.g. `100%` (doubles each Deployment)"
            )),
        }
    } else {
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Surge::Count(n)),
            _ => Err(format!(
                "`{s}` is not a surge; write a percentage such as `100%` or a count of extra pods such as `2`"
            )),
        }
    }
}

/// Parses `--on-blocked` / `onBlocked`: `fail`, `skip-node` or `force-after=DURATION`.
pub fn parse_on_blocked(s: &str) -> Result<pb::OnBlocked, String> {
    use pb::on_blocked::{Fail, Policy, SkipNode};
    let s = s.trim();
    let policy = match s {
        "fail" => Policy::Fail(Fail {}),
        "skip-node" => Policy::SkipNode(SkipNode {}),
        _ => match s.strip_prefix("force-after=") {
            Some(d) => Policy::ForceAfter(parse_duration(d).map_err(|e| format!("in `{s}`: {e}"))?),
            None => {
                return Err(format!(
                    "`{s}` is not a policy; use `fail`, `skip-node` or `force-after=DURATION` (e.g. `force-after=10m`)"
                ))
            }
        },
    };
    Ok(pb::OnBlocked { policy: Some(policy) })
}

/// How many clusters of a stage run at once: a count, or a percentage of the clusters the stage
/// selects (resolved against the coordinator's cluster list when the rollout is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most this many clusters at once.
    Count(u32),
    /// At most this share (1–100) of the stage's clusters at once, at least one.
    Percent(u32),
}

impl Concurrency {
    /// The count for a stage that selects `clusters` clusters (a percentage rounds up, at least 1).
    pub fn resolve(self, clusters: usize) -> u32 {
        match self {
            Concurrency::Count(n) => n,
            Concurrency::Percent(p) => {
                let n = (clusters as u64 * u64::from(p)).div_ceil(100);
                u32::try_from(n).unwrap_or(u32::MAX).max(1)
            }
        }
    }
}

/// Parses `maxConcurrency`: a count (at least 1) or a percentage `1%`–`100%`.
pub fn parse_concurrency(s: &str) -> Result<Concurrency, String> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        match p.trim().parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Ok(Concurrency::Percent(p)),
            _ => Err(format!(
                "`{s}` is not a percentage of the stage's clusters; write 1% to 100%, e.g. `25%`"
            )),
        }
    } else {
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Concurrency::Count(n)),
            _ => Err(format!(
                "`{s}` is not a concurrency; write a count of clusters such as `10` or a percentage such as `25%`"
            )),
        }
    }
}

/// Parses a Kubernetes minor version such as `1.34` (an optional `v` and patch are refused: EKS
/// takes minors).
pub fn parse_version(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = match s.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a Kubernetes minor version; write MAJOR.MINOR, e.g. `1.34`"
        ))
    }
}

/// Checks a Kubernetes label selector's syntax: comma-separated `key`, `!key`, `key=value`,
/// `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`.
pub fn check_selector(selector: &str) -> Result<(), String> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut terms = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("`{selector}` has a `)` without its `(`"));
        }
    }
    if depth != 0 {
        return Err(format!("`{selector}` has a `(` without its `)`"));
    }
    terms.push(&selector[start..]);
    if selector.trim().is_empty() {
        return Ok(());
    }
    for term in terms {
        check_term(term.trim()).map_err(|why| {
            format!(
                "`{}` in selector `{selector}` {why}; use `key=value`, `key!=value`, `key in (a,b)`, \
                 `key notin (a,b)`, `key` or `!key`, separated by commas",
                term.trim()
            )
        })?;
    }
    Ok(())
}

fn check_term(term: &str) -> Result<(), &'static str> {
    if term.is_empty() {
        return Err("is an empty term");
    }
    if let Some(key) = term.strip_prefix('!') {
        return check_key(key.trim());
    }
    for op in ["==", "!=", "="] {
        if let Some((key, value)) = term.split_once(op) {
            check_key(key.trim())?;
            return check_value(value.trim());
        }
    }
    for op in [" notin ", " in "] {
        if let Some((key, rest)) = term.split_once(op) {
            check_key(key.trim())?;
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or("needs its values in parentheses")?;
            for value in inner.split(',') {
                check_value(value.trim())?;
            }
            return Ok(());
        }
    }
    check_key(term)
}

fn check_key(key: &str) -> Result<(), &'static str> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err("has an invalid key prefix");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err("has an invalid key");
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || (value.len() <= 63 && is_label_name(value)) {
        Ok(())
    } else {
        Err("has an invalid value")
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

// === Checked deserialization ===
//
// A check made after a value is read must fail inside the serde visitor, so that serde_yaml marks
// the error with the value's own line and column (not its parent mapping's).

/// Reads a string and checks it with `check` (which says what is wrong and how to fix it).
fn checked_string<'de, D, T>(d: D, check: impl FnOnce(String) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(F);
    impl<'de, T, F: FnOnce(String) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.0)(s.to_owned()).map_err(E::custom)
        }
    }
    d.deserialize_str(V(check))
}

/// Reads a mapping as `R` and checks it with `check`.
fn checked_map<'de, D, R, T>(d: D, check: impl FnOnce(R) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
{
    struct V<R, F>(F, std::marker::PhantomData<R>);
    impl<'de, R: Deserialize<'de>, T, F: FnOnce(R) -> Result<T, String>> Visitor<'de> for V<R, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.0)(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V(check, std::marker::PhantomData))
}

/// Reads a sequence as `Vec<R>` and checks it with `check`.
fn checked_seq<'de, D, R, T>(d: D, check: impl FnOnce(Vec<R>) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
{
    struct V<R, F>(F, std::marker::PhantomData<R>);
    impl<'de, R: Deserialize<'de>, T, F: FnOnce(Vec<R>) -> Result<T, String>> Visitor<'de> for V<R, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            let raw = Vec::<R>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            (self.0)(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_seq(V(check, std::marker::PhantomData))
}

// === serde adapters for those values ===

/// Deserializes a value from a string (or, where `int_ok`, an integer) through `parse`.
macro_rules! string_value {
    ($name:ident, $inner:ty, $parse:expr, $expecting:literal, $int:expr) => {
        #[derive(Debug, Clone, PartialEq)]
        struct $name($inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        ($parse)(s).map($name).map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$name, E> {
                        ($int)(n).map($name).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$name, E> {
                        match u64::try_from(n) {
                            Ok(n) => self.visit_u64(n),
                            Err(_) => Err(E::custom(format!("{n} is negative; {}", $expecting))),
                        }
                    }
                    fn visit_f64<E: de::Error>(self, n: f64) -> Result<$name, E> {
                        Err(E::custom(format!(
                            "{n} is a number; write {} (quote it)",
                            $expecting
                        )))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_value!(
    DurationValue,
    prost_types::Duration,
    parse_duration,
    "a duration like `90s`, `10m` or `1h30m`",
    |n: u64| Err::<prost_types::Duration, String>(format!("`{n}` has no unit; write e.g. `{n}s` or `{n}m`"))
);
string_value!(
    SurgeValue,
    Surge,
    parse_surge,
    "a surge like `100%` or `2`",
    |n: u64| parse_surge(&n.to_string())
);
string_value!(
    OnBlockedValue,
    pb::OnBlocked,
    parse_on_blocked,
    "`fail`, `skip-node` or `force-after=DURATION`",
    |n: u64| Err::<pb::OnBlocked, String>(format!(
        "`{n}` is not a policy; use `fail`, `skip-node` or `force-after=DURATION`"
    ))
);
string_value!(
    ConcurrencyValue,
    Concurrency,
    parse_concurrency,
    "a count like `10` or a percentage like `25%`",
    |n: u64| parse_concurrency(&n.to_string())
);
string_value!(
    VersionValue,
    String,
    |s: &str| parse_version(s),
    "a minor version in quotes, like \"1.34\"",
    |n: u64| Err::<String, String>(format!(
        "`{n}` is not a minor version; write it in quotes, e.g. \"1.34\""
    ))
);

/// A selector string, checked.
#[derive(Debug, Clone, Default, PartialEq)]
struct SelectorValue(String);

impl<'de> Deserialize<'de> for SelectorValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| check_selector(&s).map(|()| SelectorValue(s)))
    }
}

// === Node group template ===

/// Example shown for an empty template file.
const TEMPLATE_EXAMPLE: &str = "  nodegroupName: ng-managed\n  instanceTypes: [m6i.large]\n  \
                                scalingConfig: {minSize: 3, maxSize: 6, desiredSize: 3}";

/// A node group template as written in YAML, in EKS CreateNodegroup field names.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TemplateFile {
    nodegroup_name: NodegroupName,
    #[serde(default)]
    instance_types: Vec<InstanceType>,
    scaling_config: ScalingConfig,
    #[serde(default)]
    subnets: Vec<SubnetId>,
    #[serde(default)]
    node_role: Option<NodeRole>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taints: Vec<Taint>,
    #[serde(default)]
    ami_type: Option<OneOf<AmiTypes>>,
    #[serde(default)]
    capacity_type: Option<OneOf<CapacityTypes>>,
    #[serde(default)]
    update_config: Option<UpdateConfig>,
}

/// `nodegroupName`: 1–63 letters, digits, `-` or `_`, starting with a letter or digit.
#[derive(Debug)]
struct NodegroupName(String);

impl<'de> Deserialize<'de> for NodegroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let b = s.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
            if ok {
                Ok(NodegroupName(s))
            } else {
                Err(format!(
                    "`{s}` is not a node group name; use 1-63 letters, digits, '-' or '_', starting with a \
                     letter or digit, e.g. `ng-managed`"
                ))
            }
        })
    }
}

/// One of `instanceTypes`, e.g. `m6i.large`.
#[derive(Debug)]
struct InstanceType(String);

impl<'de> Deserialize<'de> for InstanceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| match s.split_once('.') {
            Some((family, size))
                if !family.is_empty()
                    && !size.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')) =>
            {
                Ok(InstanceType(s))
            }
            _ => Err(format!(
                "`{s}` is not an EC2 instance type; write FAMILY.SIZE, e.g. `m6i.large`"
            )),
        })
    }
}

/// One of `subnets`, e.g. `subnet-0abc`.
#[derive(Debug)]
struct SubnetId(String);

impl<'de> Deserialize<'de> for SubnetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            if s.strip_prefix("subnet-").is_some_and(|r| !r.is_empty()) {
                Ok(SubnetId(s))
            } else {
                Err(format!(
                    "`{s}` is not a subnet id; write `subnet-...` (or leave `subnets` out to use the replaced \
                     group's)"
                ))
            }
        })
    }
}

/// `nodeRole`: an IAM role ARN.
#[derive(Debug)]
struct NodeRole(String);

impl<'de> Deserialize<'de> for NodeRole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            if s.starts_with("arn:") && s.contains(":role/") {
                Ok(NodeRole(s))
            } else {
                Err(format!(
                    "`{s}` is not an IAM role ARN; write `arn:aws:iam::ACCOUNT:role/NAME` (the role the new \
                     nodes run as)"
                ))
            }
        })
    }
}

/// An EKS enumeration, listed by aws-sdk-eks.
trait EksEnum {
    const FIELD: &'static str;
    fn values() -> &'static [&'static str];
}

#[derive(Debug)]
struct AmiTypes;
impl EksEnum for AmiTypes {
    const FIELD: &'static str = "amiType";
    fn values() -> &'static [&'static str] {
        aws_sdk_eks::types::AmiTypes::values()
    }
}

#[derive(Debug)]
struct CapacityTypes;
impl EksEnum for CapacityTypes {
    const FIELD: &'static str = "capacityType";
    fn values() -> &'static [&'static str] {
        aws_sdk_eks::types::CapacityTypes::values()
    }
}

#[derive(Debug)]
struct TaintEffects;
impl EksEnum for TaintEffects {
    const FIELD: &'static str = "effect";
    fn values() -> &'static [&'static str] {
        aws_sdk_eks::types::TaintEffect::values()
    }
}

/// A value of the EKS enumeration `E`, spelled as EKS spells it.
#[derive(Debug)]
struct OneOf<E>(String, std::marker::PhantomData<E>);

impl<'de, E: EksEnum> Deserialize<'de> for OneOf<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let values = E::values();
            if values.contains(&s.as_str()) {
                return Ok(OneOf(s, std::marker::PhantomData));
            }
            // `NoSchedule` → `NO_SCHEDULE`: Kubernetes spellings get the EKS one suggested.
            let wanted = to_upper_snake(&s);
            let close = values.iter().find(|v| v.eq_ignore_ascii_case(&wanted));
            let hint = match close {
                Some(v) => format!("write `{v}` (as EKS spells it)"),
                None => format!("use one of {}", values.join(", ")),
            };
            Err(format!("`{s}` is not a valid {}; {hint}", E::FIELD))
        })
    }
}

/// `NoSchedule` → `NO_SCHEDULE`, `on-demand` → `ON_DEMAND`.
fn to_upper_snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c == '-' || c == ' ' {
            out.push('_');
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `scalingConfig`, with `minSize <= desiredSize <= maxSize` checked.
#[derive(Debug)]
struct ScalingConfig {
    min: i32,
    max: i32,
    desired: i32,
}

impl<'de> Deserialize<'de> for ScalingConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            min_size: i32,
            max_size: i32,
            desired_size: i32,
        }
        checked_map(d, |raw: Raw| {
            let Raw {
                min_size: min,
                max_size: max,
                desired_size: desired,
            } = raw;
            let problem = if min < 0 {
                Some(format!("minSize ({min}) is negative; use 0 or more"))
            } else if max < 1 {
                Some(format!("maxSize ({max}) must be at least 1"))
            } else if min > max {
                Some(format!(
                    "minSize ({min}) is above maxSize ({max}); lower minSize or raise maxSize"
                ))
            } else if desired < min {
                Some(format!(
                    "desiredSize ({desired}) is below minSize ({min}); raise desiredSize or lower minSize"
                ))
            } else if desired > max {
                Some(format!(
                    "desiredSize ({desired}) is above maxSize ({max}); lower desiredSize or raise maxSize"
                ))
            } else {
                None
            };
            match problem {
                Some(p) => Err(p),
                None => Ok(ScalingConfig { min, max, desired }),
            }
        })
    }
}

/// One of `taints`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Taint {
    key: TaintKey,
    #[serde(default)]
    value: String,
    effect: OneOf<TaintEffects>,
}

/// A taint key: a Kubernetes qualified name.
#[derive(Debug)]
struct TaintKey(String);

impl<'de> Deserialize<'de> for TaintKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| match check_key(&s) {
            Ok(()) => Ok(TaintKey(s)),
            Err(_) => Err(format!(
                "`{s}` is not a taint key; use a Kubernetes key such as `dedicated` or `example.com/gpu`"
            )),
        })
    }
}

/// `updateConfig`: exactly one of `maxUnavailable` and `maxUnavailablePercentage`.
#[derive(Debug)]
struct UpdateConfig(pb::NodegroupUpdateConfig);

impl<'de> Deserialize<'de> for UpdateConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            max_unavailable: Option<i32>,
            max_unavailable_percentage: Option<i32>,
        }
        checked_map(d, |raw: Raw| {
            match (raw.max_unavailable, raw.max_unavailable_percentage) {
                (Some(n), None) if (1..=100).contains(&n) => {}
                (Some(n), None) => return Err(format!("maxUnavailable ({n}) must be 1 to 100 nodes")),
                (None, Some(p)) if (1..=100).contains(&p) => {}
                (None, Some(p)) => return Err(format!("maxUnavailablePercentage ({p}) must be 1 to 100")),
                _ => return Err("set exactly one of maxUnavailable and maxUnavailablePercentage".to_owned()),
            }
            Ok(UpdateConfig(pb::NodegroupUpdateConfig {
                max_unavailable: raw.max_unavailable,
                max_unavailable_percentage: raw.max_unavailable_percentage,
            }))
        })
    }
}

impl TemplateFile {
    fn into_proto(self) -> pb::NodegroupTemplate {
        pb::NodegroupTemplate {
            nodegroup_name: self.nodegroup_name.0,
            instance_types: self.instance_types.into_iter().map(|t| t.0).collect(),
            scaling_config: Some(pb::NodegroupScalingConfig {
                min_size: self.scaling_config.min,
                max_size: self.scaling_config.max,
                desired_size: self.scaling_config.desired,
            }),
            subnets: self.subnets.into_iter().map(|s| s.0).collect(),
            node_role: self.node_role.map(|r| r.0).unwrap_or_default(),
            labels: self.labels.into_iter().collect(),
            taints: self
                .taints
                .into_iter()
                .map(|t| pb::NodegroupTaint {
                    key: t.key.0,
                    value: t.value,
                    effect: t.effect.0,
                })
                .collect(),
            ami_type: self.ami_type.map(|a| a.0).unwrap_or_default(),
            capacity_type: self.capacity_type.map(|c| c.0).unwrap_or_default(),
            update_config: self.update_config.map(|u| u.0),
        }
    }
}

/// Parses a node group template (`text`, read from `file`).
pub fn parse_template(file: &Path, text: &str) -> Result<pb::NodegroupTemplate, SpecError> {
    parse_yaml::<TemplateFile>(file, text, TEMPLATE_EXAMPLE).map(TemplateFile::into_proto)
}

/// Reads and parses a node group template file.
pub fn load_template(file: &Path) -> Result<pb::NodegroupTemplate, SpecError> {
    parse_template(file, &read(file)?)
}

// === Migration parameters (flags and files) ===

/// A migration's parameters before they become `MigrationParams`: from `flotilla migrate`'s
/// flags or a rollout spec's `work.migration`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigrationOptions {
    /// The self-managed group to replace; empty: the cluster's only one.
    pub from_nodegroup: String,
    /// The managed group to create.
    pub template: pb::NodegroupTemplate,
    /// Surge; `None`: the coordinator's default (100%).
    pub surge: Option<Surge>,
    /// Drain policy for PDB-blocked pods; `None`: fail.
    pub on_blocked: Option<pb::OnBlocked>,
    /// Evict pods no controller manages.
    pub force: bool,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Nodes drained at once; `None`: the coordinator's default.
    pub drain_concurrency: Option<u32>,
    /// Per-node drain timeout.
    pub node_timeout: Option<prost_types::Duration>,
    /// Timeout for new nodes and surged Deployments.
    pub ready_timeout: Option<prost_types::Duration>,
    /// Taint key on the old nodes; `None`: `flotilla.io/migrating`.
    pub taint_key: Option<String>,
    /// On a rollback, also delete the new group.
    pub delete_nodegroup_on_rollback: bool,
}

impl MigrationOptions {
    /// The wire form.
    pub fn to_proto(&self) -> pb::MigrationParams {
        pb::MigrationParams {
            from_nodegroup: self.from_nodegroup.clone(),
            nodegroup: Some(self.template.clone()),
            taint_key: self.taint_key.clone().unwrap_or_default(),
            surge: self.surge.map(Surge::to_proto),
            ready_timeout: self.ready_timeout,
            drain_concurrency: self.drain_concurrency.unwrap_or(0),
            node_timeout: self.node_timeout,
            on_blocked: self.on_blocked,
            delete_emptydir_data: self.delete_emptydir_data,
            force: self.force,
            delete_nodegroup_on_rollback: self.delete_nodegroup_on_rollback,
        }
    }
}

// === Rollout spec ===

/// Example shown for an empty rollout spec.
const ROLLOUT_EXAMPLE: &str =
    "  name: migrate-fleet\n  work:\n    migration:\n      fromNodegroup: ng-old\n      \
                               nodegroupTemplateFile: ng-managed.yaml\n  stages:\n    \
                               - {name: dev, selector: env=dev, maxConcurrency: 100%, soak: 1m}\n    \
                               - {name: prod, selector: env=prod, maxConcurrency: 10, requireApproval: true}";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RolloutFile {
    name: String,
    work: WorkFile,
    #[serde(default)]
    selector: SelectorValue,
    #[serde(default)]
    start_paused: bool,
    agent_disconnect_timeout: Option<DurationValue>,
    stages: Stages,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkFile {
    migration: Option<MigrationFile>,
    upgrade: Option<UpgradeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MigrationFile {
    #[serde(default)]
    from_nodegroup: String,
    nodegroup_template: Option<TemplateFile>,
    nodegroup_template_file: Option<PathBuf>,
    surge: Option<SurgeValue>,
    on_blocked: Option<OnBlockedValue>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    delete_emptydir_data: bool,
    drain_concurrency: Option<u32>,
    node_timeout: Option<DurationValue>,
    ready_timeout: Option<DurationValue>,
    taint_key: Option<String>,
    #[serde(default)]
    delete_nodegroup_on_rollback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpgradeFile {
    target_version: VersionValue,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    migrate_self_managed: bool,
    migration: Option<MigrationFile>,
}

/// The stages, at least one, with unique names.
#[derive(Debug)]
struct Stages(Vec<StageFile>);

impl<'de> Deserialize<'de> for Stages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_seq(d, |stages: Vec<StageFile>| {
            if stages.is_empty() {
                return Err(
                    "a rollout needs at least one stage, e.g. `- {name: all, selector: \"\"}`".to_owned(),
                );
            }
            let mut seen = HashSet::new();
            for stage in &stages {
                if !seen.insert(stage.name.as_str()) {
                    return Err(format!(
                        "two stages are named `{}`; give each stage its own name",
                        stage.name
                    ));
                }
            }
            Ok(Stages(stages))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StageFile {
    name: String,
    #[serde(default)]
    selector: SelectorValue,
    #[serde(alias = "maxParallel")]
    max_concurrency: Option<ConcurrencyValue>,
    soak: Option<DurationValue>,
    #[serde(default)]
    max_failures: u32,
    #[serde(default)]
    require_approval: bool,
}

/// A parsed rollout spec: the request to send (percentages, the overall selector and the
/// disconnected-agent timeout are resolved by the coordinator).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// The request.
    pub request: pb::CreateRolloutRequest,
}

/// Turns a parsed migration into options, loading `nodegroupTemplateFile` relative to `base`.
fn migration_options(
    file: &Path,
    path: &str,
    m: MigrationFile,
    base: &Path,
) -> Result<MigrationOptions, SpecError> {
    let template = match (m.nodegroup_template, m.nodegroup_template_file) {
        (Some(t), None) => t.into_proto(),
        (None, Some(f)) => load_template(&base.join(f))?,
        (Some(_), Some(_)) => {
            return Err(SpecError {
                file: file.to_owned(),
                location: None,
                path: path.to_owned(),
                message: "set one of nodegroupTemplate and nodegroupTemplateFile, not both".into(),
            })
        }
        (None, None) => {
            return Err(SpecError {
                file: file.to_owned(),
                location: None,
                path: path.to_owned(),
                message: "missing the managed node group to create; add `nodegroupTemplate: {...}` \
                          (EKS CreateNodegroup fields) or `nodegroupTemplateFile: FILE`"
                    .into(),
            })
        }
    };
    if m.drain_concurrency == Some(0) {
        return Err(SpecError {
            file: file.to_owned(),
            location: None,
            path: format!("{path}.drainConcurrency"),
            message: "0 drains no node; use 1 to 100 nodes at once, or leave it out for 5".into(),
        });
    }
    Ok(MigrationOptions {
        from_nodegroup: m.from_nodegroup,
        template,
        surge: m.surge.map(|s| s.0),
        on_blocked: m.on_blocked.map(|o| o.0),
        force: m.force,
        delete_emptydir_data: m.delete_emptydir_data,
        drain_concurrency: m.drain_concurrency,
        node_timeout: m.node_timeout.map(|d| d.0),
        ready_timeout: m.ready_timeout.map(|d| d.0),
        taint_key: m.taint_key,
        delete_nodegroup_on_rollback: m.delete_nodegroup_on_rollback,
    })
}

/// Parses a rollout spec (`text`, read from `file`); `nodegroupTemplateFile`s are read relative
/// to the spec's directory.
pub fn parse_rollout(file: &Path, text: &str) -> Result<RolloutPlan, SpecError> {
    let spec: RolloutFile = parse_yaml(file, text, ROLLOUT_EXAMPLE)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let field_error = |path: &str, message: &str| SpecError {
        file: file.to_owned(),
        location: None,
        path: path.to_owned(),
        message: message.to_owned(),
    };
    if spec.name.trim().is_empty() {
        return Err(field_error(
            "name",
            "the rollout needs a name, e.g. `name: migrate-fleet`",
        ));
    }
    let work = match (spec.work.migration, spec.work.upgrade) {
        (Some(m), None) => {
            pb::work::Kind::Migration(migration_options(file, "work.migration", m, base)?.to_proto())
        }
        (None, Some(u)) => {
            let migration = match u.migration {
                Some(m) => Some(migration_options(file, "work.upgrade.migration", m, base)?.to_proto()),
                None if u.migrate_self_managed => return Err(field_error(
                    "work.upgrade.migration",
                    "migrateSelfManaged is set but there is no `migration` (with its nodegroupTemplate) to \
                         migrate with; add it or set migrateSelfManaged: false",
                )),
                None => None,
            };
            pb::work::Kind::Upgrade(pb::UpgradeParams {
                target_version: u.target_version.0,
                force: u.force,
                migrate_self_managed: u.migrate_self_managed,
                migration,
            })
        }
        _ => {
            return Err(field_error(
                "work",
                "set exactly one of `migration` and `upgrade` under `work`",
            ))
        }
    };
    let mut stages = Vec::new();
    for (i, stage) in spec.stages.0.into_iter().enumerate() {
        if stage.name.trim().is_empty() {
            return Err(field_error(
                &format!("stages[{i}].name"),
                "every stage needs a name, e.g. `dev`",
            ));
        }
        let conc = stage.max_concurrency.map(|c| c.0);
        stages.push(pb::StageSpec {
            name: stage.name,
            selector: stage.selector.0,
            max_parallel: match conc {
                Some(Concurrency::Count(n)) => n,
                _ => 0,
            },
            max_parallel_percent: match conc {
                Some(Concurrency::Percent(p)) => p,
                _ => 0,
            },
            soak: stage.soak.map(|d| d.0),
            max_failures: stage.max_failures,
            require_approval: stage.require_approval,
        });
    }
    Ok(RolloutPlan {
        request: pb::CreateRolloutRequest {
            name: spec.name,
            work: Some(pb::Work { kind: Some(work) }),
            stages,
            start_paused: spec.start_paused,
            selector: spec.selector.0,
            agent_disconnect_timeout: spec.agent_disconnect_timeout.map(|d| d.0),
        },
    })
}

/// Reads and parses a rollout spec file.
pub fn load_rollout(file: &Path) -> Result<RolloutPlan, SpecError> {
    parse_rollout(file, &read(file)?)
}

#[cfg(test)]
mod tests;
