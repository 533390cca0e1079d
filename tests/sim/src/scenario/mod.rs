//! Scenario files: the YAML that says what every simulated EKS cluster starts with (node groups,
//! workloads, timing, faults, per-cluster overrides), its built-in default, validation with errors
//! that name the file, line, column and field, and (in [`build`]) the typed objects it turns into.
//!
//! # Format
//!
//! A scenario is a YAML mapping with camelCase keys; unknown keys are errors everywhere.
//! Every top-level section is optional: a section the file leaves out is taken from
//! [`Scenario::default_scenario`] (write `pods: []` to have none). `overrides` maps a cluster name
//! to any of the other top-level sections, each replacing that whole section for that cluster.
//! `tests/sim/scenarios/example.yaml` documents every field.

pub mod build;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A field path: `at!["deployments", 1, "replicas"]`.
macro_rules! at {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

pub use build::{admit_pod, build_cluster, build_node, kubelet_version, node_name};
pub mod eks;
pub use eks::{EksSpec, EksTiming};

/// Kubernetes minor versions (of 1.x) the simulated control plane serves.
pub const SUPPORTED_MINORS: RangeInclusive<u32> = 33..=35;
/// How many minor versions a kubelet may lag the control plane (the skew policy since 1.28).
pub const MAX_KUBELET_SKEW: u32 = 3;
/// Most nodes one node group may have in a simulated cluster.
pub const MAX_NODES_PER_GROUP: u32 = 1000;
/// Most replicas a workload (or an HPA's maxReplicas) may ask for in a simulated cluster.
pub const MAX_REPLICAS: u32 = 10_000;
/// Longest delay any duration field accepts (after `timeScale`).
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Namespaces every cluster has, in the order they are created.
pub const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Priority classes every cluster has (the only ones a scenario may name).
pub const SYSTEM_PRIORITY_CLASSES: [&str; 2] = ["system-cluster-critical", "system-node-critical"];

// ---------------------------------------------------------------------------------------------
// Value types: versions, durations, quantities, int-or-percent.
// ---------------------------------------------------------------------------------------------

/// A Kubernetes version of the 1.x line at minor granularity, written `"1.33"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion(u32);

impl KubeVersion {
    /// Version 1.`minor`.
    pub const fn new(minor: u32) -> Self {
        KubeVersion(minor)
    }

    /// The minor number (33 for 1.33).
    pub const fn minor(self) -> u32 {
        self.0
    }

    /// Parses `"1.33"`. The error says what is expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid Kubernetes version {s:?}: expected \"1.<minor>\", e.g. \"1.33\"");
        let rest = s.strip_prefix("1.").ok_or_else(bad)?;
        if rest.is_empty()
            || rest.len() > 3
            || !rest.bytes().all(|b| b.is_ascii_digit())
            || (rest.len() > 1 && rest.starts_with('0'))
        {
            return Err(bad());
        }
        rest.parse().map(KubeVersion).map_err(|_| bad())
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KubeVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes version string such as \"1.33\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KubeVersion, E> {
                KubeVersion::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KubeVersion, E> {
                Err(E::custom(format!(
                    "the unquoted number {v} is not a version string; quote it, e.g. \"1.33\" \
                     (unquoted, 1.30 would read as 1.3)"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KubeVersion, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KubeVersion, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a duration such as `"500ms"`, `"2s"`, `"1m"`, `"1m30s"` or `"1.5s"` (units `ns`, `us`,
/// `ms`, `s`, `m`, `h`; `"0"` alone is also accepted).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a number and a unit, e.g. \"500ms\", \"2s\", \"1m\" or \
             \"1m30s\" (units: ns, us, ms, s, m, h)"
        )
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 20 || frac.len() > 18 {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let frac_nanos = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            digits * unit_nanos / 10u128.pow(frac.len() as u32)
        };
        let part = int
            .checked_mul(unit_nanos)
            .and_then(|p| p.checked_add(frac_nanos))
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration {s:?}: too long"))
}

/// Writes a duration the way [`parse_duration`] reads it (`"1m30s"`, `"500ms"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut nanos = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{unit}", nanos / size));
            nanos %= size;
        }
    }
    out
}

/// A duration as scenarios write it.
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"2s\" or \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                parse_duration(v).map(DurationText).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                if v == 0 {
                    return Ok(DurationText(Duration::ZERO));
                }
                Err(E::custom(format!(
                    "the number {v} has no unit; write e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!("invalid duration {v}: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "the number {v} has no unit; write e.g. \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with)]` for `Duration` fields written as duration strings.
mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        DurationText::deserialize(d).map(|t| t.0)
    }
}

/// `#[serde(with)]` for `Option<Duration>` fields written as duration strings or `null`.
mod opt_duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<DurationText>::deserialize(d).map(|t| t.map(|t| t.0))
    }
}

/// A validated Kubernetes resource quantity (`"100m"`, `"4"`, `"16Gi"`, `"1.5G"`, `"1e3"`), kept as
/// written, with its value known exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    text: String,
    nanos: u128,
}

impl Amount {
    /// Parses a non-negative quantity as Kubernetes does. The error says what is expected.
    pub fn parse(s: &str) -> Result<Amount, String> {
        let bad = || {
            format!(
                "invalid quantity {s:?}: expected a number with an optional suffix (m, k, M, G, T, \
                 Ki, Mi, Gi, Ti, or an exponent like e3), e.g. \"100m\", \"2\", \"16Gi\""
            )
        };
        if s.starts_with('-') {
            return Err(format!("invalid quantity {s:?}: must not be negative"));
        }
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(num_end);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(format!("invalid quantity {s:?}: too many digits"));
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad())?
        };
        let (e10, e2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            exp if exp.starts_with(['e', 'E']) => {
                let n = &exp[1..];
                let unsigned = n.strip_prefix(['+', '-']).unwrap_or(n);
                if unsigned.is_empty() || unsigned.len() > 2 || !unsigned.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                (n.parse().map_err(|_| bad())?, 0)
            }
            _ => return Err(bad()),
        };
        let too_large = || format!("invalid quantity {s:?}: too large");
        let scaled = mantissa.checked_mul(1u128 << e2).ok_or_else(too_large)?;
        let e = e10 + 9 - frac.len() as i32;
        let nanos = if e >= 0 {
            10u128
                .checked_pow(e as u32)
                .and_then(|p| scaled.checked_mul(p))
                .ok_or_else(too_large)?
        } else {
            match 10u128.checked_pow((-e) as u32) {
                Some(p) => scaled.div_ceil(p),
                None => u128::from(scaled > 0),
            }
        };
        Ok(Amount {
            text: s.to_string(),
            nanos,
        })
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in thousandths, rounded up (millicores for cpu), as Kubernetes' `MilliValue`.
    pub fn millis(&self) -> u128 {
        self.nanos.div_ceil(1_000_000)
    }

    /// The value rounded up to a whole number (bytes for memory), as Kubernetes' `Value`.
    pub fn value(&self) -> u128 {
        self.nanos.div_ceil(1_000_000_000)
    }

    /// The quantity as Kubernetes objects carry it.
    pub fn to_quantity(&self) -> Quantity {
        Quantity(self.text.clone())
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"100m\", \"2\" or \"16Gi\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Amount::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                Amount::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!("invalid quantity {v}")));
                }
                Amount::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn amount(s: &str) -> Amount {
    // Only called with literals that parse; fall back to zero rather than panic.
    Amount::parse(s).unwrap_or(Amount {
        text: "0".into(),
        nanos: 0,
    })
}

/// An integer or a percentage, as rolling-update and PDB fields take (`3` or `"25%"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOrPercent {
    /// An absolute number of pods.
    Int(u32),
    /// A percentage of the desired pods.
    Percent(u32),
}

impl IntOrPercent {
    /// As Kubernetes objects carry it.
    pub fn to_int_or_string(self) -> IntOrString {
        match self {
            IntOrPercent::Int(n) => IntOrString::Int(i32::try_from(n).unwrap_or(i32::MAX)),
            IntOrPercent::Percent(p) => IntOrString::String(format!("{p}%")),
        }
    }

    /// Whether the value is zero (either form).
    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Int(0) | IntOrPercent::Percent(0))
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Int(n) => s.serialize_u32(*n),
            IntOrPercent::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a percentage such as \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                match i32::try_from(v) {
                    Ok(n) => Ok(IntOrPercent::Int(n as u32)),
                    Err(_) => Err(E::custom(format!("{v} is too large"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} must not be negative")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                let bad = || {
                    E::custom(format!(
                        "invalid value {v:?}: expected a percentage such as \"25%\" or a bare integer such as 1"
                    ))
                };
                let digits = v.strip_suffix('%').ok_or_else(bad)?;
                if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                digits.parse().map(IntOrPercent::Percent).map_err(|_| bad())
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes a string-keyed map, refusing a key given twice.
fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Vis<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!(
                        "duplicate key `{key}`; give each key once"
                    )));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Vis(PhantomData))
}

// ---------------------------------------------------------------------------------------------
// The scenario sections.
// ---------------------------------------------------------------------------------------------

/// Named sets of delays. `fast` (the default) suits tests; `realistic` is what EKS feels like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimingPreset {
    /// Sub-second pod delays, one-second node and termination delays.
    #[default]
    Fast,
    /// Node Ready ~60s, pod start ~5s, readiness ~10s, termination ~5s.
    Realistic,
}

impl TimingPreset {
    /// The preset's delays, before `timeScale`.
    pub fn delays(self) -> Timing {
        match self {
            TimingPreset::Fast => Timing {
                pod_start_delay: Duration::from_millis(100),
                pod_readiness_delay: Duration::from_millis(300),
                termination: Duration::from_secs(1),
                node_ready_delay: Duration::from_secs(1),
            },
            TimingPreset::Realistic => Timing {
                pod_start_delay: Duration::from_secs(5),
                pod_readiness_delay: Duration::from_secs(10),
                termination: Duration::from_secs(5),
                node_ready_delay: Duration::from_secs(60),
            },
        }
    }
}

/// The `timing` section: a preset, a scale, and per-delay overrides of the preset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a timing mapping")]
pub struct TimingSpec {
    /// Base delays.
    #[serde(default)]
    pub preset: TimingPreset,
    /// Multiplies every delay of this section and every deployment's `readinessDelay`
    /// (0.1 runs ten times faster). `faults.apiLatency` is not scaled.
    #[serde(default = "one_f64")]
    pub time_scale: f64,
    /// Pod scheduled -> Running.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub pod_start_delay: Option<Duration>,
    /// Pod Running -> Ready (a deployment's `readinessDelay` overrides it).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub pod_readiness_delay: Option<Duration>,
    /// How long containers take to exit after SIGTERM (bounded by the pod's grace period).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub termination_seconds: Option<Duration>,
    /// A new node registers -> Ready.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub node_ready_delay: Option<Duration>,
}

impl Default for TimingSpec {
    fn default() -> Self {
        TimingSpec {
            preset: TimingPreset::Fast,
            time_scale: 1.0,
            pod_start_delay: None,
            pod_readiness_delay: None,
            termination_seconds: None,
            node_ready_delay: None,
        }
    }
}

/// Effective delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Pod scheduled -> Running.
    pub pod_start_delay: Duration,
    /// Pod Running -> Ready.
    pub pod_readiness_delay: Duration,
    /// Containers' exit after SIGTERM (the controllers bound it by the grace period).
    pub termination: Duration,
    /// Node registered -> Ready.
    pub node_ready_delay: Duration,
}

impl TimingSpec {
    /// The delays before `timeScale`: the preset's, with this section's overrides.
    pub fn unscaled(&self) -> Timing {
        let p = self.preset.delays();
        Timing {
            pod_start_delay: self.pod_start_delay.unwrap_or(p.pod_start_delay),
            pod_readiness_delay: self.pod_readiness_delay.unwrap_or(p.pod_readiness_delay),
            termination: self.termination_seconds.unwrap_or(p.termination),
            node_ready_delay: self.node_ready_delay.unwrap_or(p.node_ready_delay),
        }
    }

    /// The effective delays: [`TimingSpec::unscaled`] times `timeScale`.
    pub fn resolve(&self) -> Timing {
        let u = self.unscaled();
        Timing {
            pod_start_delay: self.scale(u.pod_start_delay),
            pod_readiness_delay: self.scale(u.pod_readiness_delay),
            termination: self.scale(u.termination),
            node_ready_delay: self.scale(u.node_ready_delay),
        }
    }

    /// `d` times `timeScale`, to the nanosecond (saturating; never panics).
    pub fn scale(&self, d: Duration) -> Duration {
        scale_duration(d, self.time_scale).unwrap_or(Duration::MAX)
    }
}

fn scale_duration(d: Duration, scale: f64) -> Option<Duration> {
    if scale == 1.0 {
        return Some(d);
    }
    let nanos = (d.as_nanos() as f64 * scale).round();
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(nanos as u64))
}

/// How a node group is run, which decides its identifying node label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeGroupType {
    /// eksctl-style self-managed group: `alpha.eksctl.io/nodegroup-name=<name>`.
    #[default]
    SelfManaged,
    /// EKS managed node group: `eks.amazonaws.com/nodegroup=<name>`,
    /// `eks.amazonaws.com/capacityType=ON_DEMAND`.
    Managed,
}

/// What each node of a group reports as capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a capacity mapping such as {pods: 30, cpu: \"4\", memory: 16Gi}"
)]
pub struct CapacitySpec {
    /// Max pods (the kubelet's `--max-pods`); allocatable pods equal it.
    #[serde(default = "thirty")]
    pub pods: u32,
    /// CPU capacity; allocatable is lower by EKS's kube-reserved CPU.
    #[serde(default = "four_cpu")]
    pub cpu: Amount,
    /// Memory capacity; allocatable is lower by EKS's kube-reserved memory and the eviction threshold.
    #[serde(default = "sixteen_gi")]
    pub memory: Amount,
}

impl Default for CapacitySpec {
    fn default() -> Self {
        CapacitySpec {
            pods: 30,
            cpu: four_cpu(),
            memory: sixteen_gi(),
        }
    }
}

/// A taint effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods that do not tolerate it are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The name as Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A taint on every node of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a taint such as {key: dedicated, value: batch, effect: NoSchedule}"
)]
pub struct TaintSpec {
    /// Taint key (a qualified name).
    pub key: String,
    /// Taint value (a label value; may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A toleration operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TolerationOperator {
    /// Key and value must match.
    #[default]
    Equal,
    /// Key must match (an empty key matches every taint).
    Exists,
}

/// A toleration on a workload's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a toleration such as {operator: Exists}"
)]
pub struct TolerationSpec {
    /// Taint key; empty with `Exists` tolerates everything.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// Value for `Equal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Effect to match; none matches all effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For `NoExecute`: how long the pod stays once tainted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl TolerationSpec {
    /// Tolerates every taint (`operator: Exists`), as `aws-node` and `kube-proxy` do.
    pub fn everything() -> Self {
        TolerationSpec {
            operator: TolerationOperator::Exists,
            ..Default::default()
        }
    }
}

/// One node group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a node group such as {name: ng-1, nodes: 3}"
)]
pub struct NodeGroupSpec {
    /// Group name (EKS rules: letters, digits, `-`, `_`; up to 63 characters).
    pub name: String,
    /// `self-managed` (default) or `managed`.
    #[serde(rename = "type", default)]
    pub kind: NodeGroupType,
    /// Number of nodes.
    #[serde(default = "one")]
    pub nodes: u32,
    /// EC2 instance type (decides the architecture: Graviton types are arm64).
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Per-node capacity.
    #[serde(default)]
    pub capacity: CapacitySpec,
    /// Extra node labels.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<TaintSpec>,
    /// Kubelet minor version; defaults to the cluster's `kubernetesVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<KubeVersion>,
}

/// A PodDisruptionBudget for a deployment: exactly one of `minAvailable` and `maxUnavailable`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a PDB such as {minAvailable: 1} or {maxUnavailable: \"25%\"}"
)]
pub struct PdbSpec {
    /// Pods that must stay available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrPercent>,
    /// Pods that may be unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    /// How running-but-unready pods may be evicted (unset: the API's `IfHealthyBudget` behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_pod_eviction_policy: Option<UnhealthyPodEvictionPolicy>,
}

/// `spec.unhealthyPodEvictionPolicy` of a PDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnhealthyPodEvictionPolicy {
    /// Unready pods may be evicted only while the budget is met.
    IfHealthyBudget,
    /// Unready pods may always be evicted.
    AlwaysAllow,
}

/// An autoscaling/v2 HPA on a deployment, scaling on CPU utilization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an HPA such as {minReplicas: 2, maxReplicas: 6}"
)]
pub struct HpaSpec {
    /// Lower bound (at least 1).
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Target average CPU utilization in percent of requests (the API defaults it to 80).
    #[serde(rename = "targetCPUUtilization", default = "eighty")]
    pub target_cpu_utilization: u32,
}

/// One Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a deployment such as {name: web, namespace: shop, replicas: 2}"
)]
pub struct DeploymentSpec {
    /// Name (a DNS label; also the `app` label, container, PDB and HPA name).
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Desired replicas.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Container image; a realistic one per well-known name otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU request (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Amount>,
    /// Memory request (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Amount>,
    /// Whether pods mount an emptyDir volume (`kubectl drain` then needs `--delete-emptydir-data`).
    #[serde(default)]
    pub empty_dir: bool,
    /// Pod grace period.
    #[serde(default = "thirty")]
    pub termination_grace_period_seconds: u32,
    /// Running -> Ready for this deployment's pods (before `timeScale`); `timing.podReadinessDelay`
    /// otherwise.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub readiness_delay: Option<Duration>,
    /// Rolling update surge.
    #[serde(default = "quarter")]
    pub max_surge: IntOrPercent,
    /// Rolling update unavailability.
    #[serde(default = "quarter")]
    pub max_unavailable: IntOrPercent,
    /// Pod node selector.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<TolerationSpec>,
    /// `system-cluster-critical` or `system-node-critical`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// A PDB named like the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb: Option<PdbSpec>,
    /// An HPA named like the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaSpec>,
}

/// One DaemonSet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a daemon set such as {name: aws-node, namespace: kube-system}"
)]
pub struct DaemonSetSpec {
    /// Name (a DNS label).
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Container image; a realistic one per well-known name otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Amount>,
    /// Memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Amount>,
    /// Pod grace period.
    #[serde(default = "thirty")]
    pub termination_grace_period_seconds: u32,
    /// Rolling update unavailability (the API's default is 1).
    #[serde(default = "one_pod")]
    pub max_unavailable: IntOrPercent,
    /// Whether pods use the host network (as `aws-node` and `kube-proxy` do).
    #[serde(default)]
    pub host_network: bool,
    /// Pod node selector.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations (`[{operator: Exists}]` tolerates everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<TolerationSpec>,
    /// `system-cluster-critical` or `system-node-critical`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// One standalone pod (no controller: `kubectl drain` refuses it without `--force`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a pod such as {name: debug-shell, namespace: shop}"
)]
pub struct StandalonePodSpec {
    /// Name (a DNS label).
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Container image; a realistic one per well-known name otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Amount>,
    /// Memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Amount>,
    /// Whether the pod mounts an emptyDir volume.
    #[serde(default)]
    pub empty_dir: bool,
    /// Grace period.
    #[serde(default = "thirty")]
    pub termination_grace_period_seconds: u32,
    /// Node selector.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (besides the two the API server adds to every pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<TolerationSpec>,
}

/// Pods of one deployment that never become Ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "{namespace: shop, deployment: web}"
)]
pub struct NeverReadyFault {
    /// The deployment's namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The deployment.
    pub deployment: String,
}

/// Nodes of a group that stay NotReady (the group's last `count` nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "{nodeGroup: ng-1, count: 1}"
)]
pub struct NotReadyNodesFault {
    /// The node group.
    pub node_group: String,
    /// How many of its nodes.
    #[serde(default = "one")]
    pub count: u32,
}

/// The `faults` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a faults mapping")]
pub struct FaultSpec {
    /// Added to every API call (wall-clock; not scaled by `timeScale`).
    #[serde(default, with = "duration_text")]
    pub api_latency: Duration,
    /// Share of API calls answered with a 5xx, `0.0..=1.0`.
    #[serde(default)]
    pub api_error_rate: f64,
    /// Deployments whose pods never become Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_ready: Vec<NeverReadyFault>,
    /// Nodes that stay NotReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_nodes: Vec<NotReadyNodesFault>,
}

/// One cluster's sections in an `overrides` entry; each one given replaces that whole section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of top-level sections to replace for this cluster"
)]
pub struct ScenarioOverride {
    /// Replaces `kubernetesVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<KubeVersion>,
    /// Replaces `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Replaces `timing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<TimingSpec>,
    /// Replaces `nodeGroups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_groups: Option<Vec<NodeGroupSpec>>,
    /// Replaces `namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Replaces `deployments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<DeploymentSpec>>,
    /// Replaces `daemonSets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_sets: Option<Vec<DaemonSetSpec>>,
    /// Replaces `pods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<StandalonePodSpec>>,
    /// Replaces `faults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultSpec>,
    /// Replaces `eks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<EksSpec>,
}

/// The file as read: every section optional.
#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a scenario mapping (kubernetesVersion, timing, nodeGroups, namespaces, deployments, daemonSets, pods, faults, eks, overrides)"
)]
struct RawScenario {
    #[serde(default)]
    kubernetes_version: Option<KubeVersion>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    timing: Option<TimingSpec>,
    #[serde(default)]
    node_groups: Option<Vec<NodeGroupSpec>>,
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    deployments: Option<Vec<DeploymentSpec>>,
    #[serde(default)]
    daemon_sets: Option<Vec<DaemonSetSpec>>,
    #[serde(default)]
    pods: Option<Vec<StandalonePodSpec>>,
    #[serde(default)]
    faults: Option<FaultSpec>,
    #[serde(default)]
    eks: Option<EksSpec>,
    #[serde(default, deserialize_with = "unique_map")]
    overrides: BTreeMap<String, ScenarioOverride>,
}

/// A whole scenario: what every cluster gets, and per-cluster overrides.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// Control-plane version (1.33, 1.34 or 1.35).
    pub kubernetes_version: KubeVersion,
    /// AWS region of the clusters (`us-west-2`).
    pub region: String,
    /// Delays.
    pub timing: TimingSpec,
    /// Node groups.
    pub node_groups: Vec<NodeGroupSpec>,
    /// Namespaces besides `default`, `kube-system`, `kube-public` and `kube-node-lease`.
    pub namespaces: Vec<String>,
    /// Deployments (with their PDBs and HPAs).
    pub deployments: Vec<DeploymentSpec>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSetSpec>,
    /// Standalone pods.
    pub pods: Vec<StandalonePodSpec>,
    /// Injected faults.
    pub faults: FaultSpec,
    /// The simulated EKS / Auto Scaling APIs: delays, faults, insights, add-ons.
    #[serde(skip_serializing_if = "EksSpec::is_default")]
    pub eks: EksSpec,
    /// Per cluster name: sections replaced for that cluster.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, ScenarioOverride>,
}

/// One cluster's scenario, overrides applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScenario {
    /// Control-plane version.
    pub kubernetes_version: KubeVersion,
    /// AWS region.
    pub region: String,
    /// Delays.
    pub timing: TimingSpec,
    /// Node groups.
    pub node_groups: Vec<NodeGroupSpec>,
    /// Namespaces besides the system ones.
    pub namespaces: Vec<String>,
    /// Deployments.
    pub deployments: Vec<DeploymentSpec>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSetSpec>,
    /// Standalone pods.
    pub pods: Vec<StandalonePodSpec>,
    /// Injected faults.
    pub faults: FaultSpec,
    /// The simulated EKS / Auto Scaling APIs.
    pub eks: EksSpec,
}

fn one() -> u32 {
    1
}
fn thirty() -> u32 {
    30
}
fn eighty() -> u32 {
    80
}
fn one_f64() -> f64 {
    1.0
}
fn four_cpu() -> Amount {
    amount("4")
}
fn sixteen_gi() -> Amount {
    amount("16Gi")
}
fn quarter() -> IntOrPercent {
    IntOrPercent::Percent(25)
}
fn one_pod() -> IntOrPercent {
    IntOrPercent::Int(1)
}
fn default_namespace() -> String {
    "default".into()
}
fn default_instance_type() -> String {
    "m5.xlarge".into()
}

// ---------------------------------------------------------------------------------------------
// The default scenario.
// ---------------------------------------------------------------------------------------------

fn deployment(name: &str, namespace: &str, replicas: u32) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        namespace: namespace.into(),
        replicas,
        image: None,
        cpu: None,
        memory: None,
        empty_dir: false,
        termination_grace_period_seconds: 30,
        readiness_delay: None,
        max_surge: quarter(),
        max_unavailable: quarter(),
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        priority_class_name: None,
        pdb: None,
        hpa: None,
    }
}

fn requests(cpu: &str, memory: &str) -> (Option<Amount>, Option<Amount>) {
    (Some(amount(cpu)), Some(amount(memory)))
}

fn default_deployments() -> Vec<DeploymentSpec> {
    let min = |n| {
        Some(PdbSpec {
            min_available: Some(IntOrPercent::Int(n)),
            ..Default::default()
        })
    };
    let max = |n| {
        Some(PdbSpec {
            max_unavailable: Some(IntOrPercent::Int(n)),
            ..Default::default()
        })
    };

    let mut web = deployment("web", "shop", 4);
    (web.cpu, web.memory) = requests("100m", "128Mi");
    web.pdb = min(3);

    let mut api = deployment("api", "shop", 3);
    (api.cpu, api.memory) = requests("200m", "256Mi");
    api.pdb = max(1);

    let mut worker = deployment("worker", "shop", 2);
    (worker.cpu, worker.memory) = requests("250m", "256Mi");
    worker.empty_dir = true;
    worker.hpa = Some(HpaSpec {
        min_replicas: 2,
        max_replicas: 6,
        target_cpu_utilization: 70,
    });

    let mut cache = deployment("cache", "shop", 1);
    (cache.cpu, cache.memory) = requests("100m", "256Mi");
    cache.pdb = min(1);

    let mut coredns = deployment("coredns", "kube-system", 2);
    (coredns.cpu, coredns.memory) = requests("100m", "70Mi");
    coredns.max_unavailable = IntOrPercent::Int(1);
    coredns.priority_class_name = Some("system-cluster-critical".into());
    coredns.tolerations = vec![
        TolerationSpec {
            key: "CriticalAddonsOnly".into(),
            operator: TolerationOperator::Exists,
            ..Default::default()
        },
        TolerationSpec {
            key: "node-role.kubernetes.io/control-plane".into(),
            effect: Some(TaintEffect::NoSchedule),
            operator: TolerationOperator::Exists,
            ..Default::default()
        },
    ];
    coredns.pdb = max(1);

    let mut alb = deployment("aws-load-balancer-controller", "kube-system", 2);
    (alb.cpu, alb.memory) = requests("100m", "128Mi");
    alb.termination_grace_period_seconds = 10;
    alb.priority_class_name = Some("system-cluster-critical".into());
    alb.pdb = max(1);

    vec![web, api, worker, cache, coredns, alb]
}

fn default_daemon_sets() -> Vec<DaemonSetSpec> {
    let ds = |name: &str, cpu: &str, grace: u32| DaemonSetSpec {
        name: name.into(),
        namespace: "kube-system".into(),
        image: None,
        cpu: Some(amount(cpu)),
        memory: None,
        termination_grace_period_seconds: grace,
        max_unavailable: IntOrPercent::Percent(10),
        host_network: true,
        node_selector: BTreeMap::new(),
        tolerations: vec![TolerationSpec::everything()],
        priority_class_name: Some("system-node-critical".into()),
    };
    vec![ds("aws-node", "25m", 10), ds("kube-proxy", "100m", 30)]
}

impl Scenario {
    /// The built-in scenario: Kubernetes 1.33, node group `ng-old` (4 × m5.xlarge, 30 pods,
    /// 4 CPU, 16Gi), the `shop` workloads (web, api, worker, cache, debug-shell) and the EKS
    /// kube-system add-ons (coredns, aws-load-balancer-controller, aws-node, kube-proxy).
    pub fn default_scenario() -> Scenario {
        Scenario {
            kubernetes_version: KubeVersion::new(33),
            region: "us-west-2".into(),
            timing: TimingSpec::default(),
            node_groups: vec![NodeGroupSpec {
                name: "ng-old".into(),
                kind: NodeGroupType::SelfManaged,
                nodes: 4,
                instance_type: default_instance_type(),
                capacity: CapacitySpec::default(),
                labels: BTreeMap::new(),
                taints: Vec::new(),
                kubelet_version: None,
            }],
            namespaces: vec!["shop".into()],
            deployments: default_deployments(),
            daemon_sets: default_daemon_sets(),
            pods: vec![StandalonePodSpec {
                name: "debug-shell".into(),
                namespace: "shop".into(),
                image: None,
                cpu: Some(amount("10m")),
                memory: Some(amount("16Mi")),
                empty_dir: false,
                termination_grace_period_seconds: 30,
                node_selector: BTreeMap::new(),
                tolerations: Vec::new(),
            }],
            faults: FaultSpec::default(),
            eks: EksSpec::default(),
            overrides: BTreeMap::new(),
        }
    }

    /// Reads a scenario file's text; `file_name` only labels errors. Sections the file leaves
    /// out come from [`Scenario::default_scenario`]. Validates every cluster's effective scenario.
    pub fn from_yaml(text: &str, file_name: &str) -> Result<Scenario, ScenarioError> {
        let raw = parse_raw(text, file_name)?;
        let (scenario, defaulted) = Scenario::resolve(raw);
        scenario
            .check(&defaulted)
            .map_err(|issue| issue.into_error(file_name, Some(text)))?;
        Ok(scenario)
    }

    /// Reads and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::from_yaml(&text, &file)
    }

    /// Validates a scenario built in code (errors carry no line numbers).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.check(&BTreeSet::new())
            .map_err(|issue| issue.into_error("<scenario>", None))
    }

    /// The scenario of cluster `name`: the base sections with that cluster's overrides applied.
    pub fn for_cluster(&self, name: &str) -> ClusterScenario {
        match self.overrides.get(name) {
            Some(o) => self.base().with(o),
            None => self.base(),
        }
    }

    /// The base sections, no override applied.
    fn base(&self) -> ClusterScenario {
        ClusterScenario {
            kubernetes_version: self.kubernetes_version,
            region: self.region.clone(),
            timing: self.timing.clone(),
            node_groups: self.node_groups.clone(),
            namespaces: self.namespaces.clone(),
            deployments: self.deployments.clone(),
            daemon_sets: self.daemon_sets.clone(),
            pods: self.pods.clone(),
            faults: self.faults.clone(),
            eks: self.eks.clone(),
        }
    }

    /// Override keys that name none of `clusters` (the fleet should refuse or warn about them).
    pub fn unknown_overrides<'a>(&'a self, clusters: &[&str]) -> Vec<&'a str> {
        self.overrides
            .keys()
            .map(String::as_str)
            .filter(|k| !clusters.contains(k))
            .collect()
    }

    /// The scenario as YAML (which [`Scenario::from_yaml`] reads back to an equal scenario).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    fn resolve(raw: RawScenario) -> (Scenario, BTreeSet<Section>) {
        let d = Scenario::default_scenario();
        let mut defaulted = BTreeSet::new();
        fn take<T>(v: Option<T>, default: T, s: Section, set: &mut BTreeSet<Section>) -> T {
            v.unwrap_or_else(|| {
                set.insert(s);
                default
            })
        }
        let scenario = Scenario {
            kubernetes_version: take(
                raw.kubernetes_version,
                d.kubernetes_version,
                Section::KubernetesVersion,
                &mut defaulted,
            ),
            region: take(raw.region, d.region, Section::Region, &mut defaulted),
            timing: take(raw.timing, d.timing, Section::Timing, &mut defaulted),
            node_groups: take(
                raw.node_groups,
                d.node_groups,
                Section::NodeGroups,
                &mut defaulted,
            ),
            namespaces: take(raw.namespaces, d.namespaces, Section::Namespaces, &mut defaulted),
            deployments: take(
                raw.deployments,
                d.deployments,
                Section::Deployments,
                &mut defaulted,
            ),
            daemon_sets: take(
                raw.daemon_sets,
                d.daemon_sets,
                Section::DaemonSets,
                &mut defaulted,
            ),
            pods: take(raw.pods, d.pods, Section::Pods, &mut defaulted),
            faults: take(raw.faults, d.faults, Section::Faults, &mut defaulted),
            eks: take(raw.eks, d.eks, Section::Eks, &mut defaulted),
            overrides: raw.overrides,
        };
        (scenario, defaulted)
    }

    fn check(&self, defaulted: &BTreeSet<Section>) -> Result<(), Issue> {
        let default_hint = |mut issue: Issue| {
            if defaulted.contains(&issue.section) {
                let key = issue.section.key();
                issue.message.push_str(&format!(
                    " (the `{key}` section comes from the built-in default scenario because the file \
                     has none; write your own `{key}`)"
                ));
            }
            issue
        };
        self.base().check().map_err(default_hint)?;
        for (name, o) in &self.overrides {
            if !is_cluster_name(name) {
                return Err(Issue::new(
                    Section::Overrides,
                    at!["overrides", name.as_str()],
                    format!(
                        "{name:?} is not a valid EKS cluster name: use 1-100 letters, digits, '-' and '_', \
                         starting with a letter or digit"
                    ),
                ));
            }
            self.for_cluster(name).check().map_err(|issue| {
                if o.has(issue.section) {
                    let mut path = at!["overrides", name.as_str()];
                    path.extend(issue.path);
                    Issue { path, ..issue }
                } else {
                    let mut issue = default_hint(issue);
                    issue
                        .message
                        .push_str(&format!(" (in cluster {name:?}, with overrides.{name} applied)"));
                    issue
                }
            })?;
        }
        Ok(())
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::default_scenario()
    }
}

impl ScenarioOverride {
    fn has(&self, s: Section) -> bool {
        match s {
            Section::KubernetesVersion => self.kubernetes_version.is_some(),
            Section::Region => self.region.is_some(),
            Section::Timing => self.timing.is_some(),
            Section::NodeGroups => self.node_groups.is_some(),
            Section::Namespaces => self.namespaces.is_some(),
            Section::Deployments => self.deployments.is_some(),
            Section::DaemonSets => self.daemon_sets.is_some(),
            Section::Pods => self.pods.is_some(),
            Section::Faults => self.faults.is_some(),
            Section::Eks => self.eks.is_some(),
            Section::Overrides => false,
        }
    }
}

impl ClusterScenario {
    fn with(mut self, o: &ScenarioOverride) -> ClusterScenario {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        set(&mut self.kubernetes_version, &o.kubernetes_version);
        set(&mut self.region, &o.region);
        set(&mut self.timing, &o.timing);
        set(&mut self.node_groups, &o.node_groups);
        set(&mut self.namespaces, &o.namespaces);
        set(&mut self.deployments, &o.deployments);
        set(&mut self.daemon_sets, &o.daemon_sets);
        set(&mut self.pods, &o.pods);
        set(&mut self.faults, &o.faults);
        set(&mut self.eks, &o.eks);
        self
    }

    /// Effective delays, `timeScale` applied.
    pub fn timing(&self) -> Timing {
        self.timing.resolve()
    }

    /// Running -> Ready for pods of deployment `namespace/name`: its `readinessDelay` if set,
    /// else `timing.podReadinessDelay`; `timeScale` applied.
    pub fn readiness_delay(&self, namespace: &str, name: &str) -> Duration {
        match self.deployment(namespace, name).and_then(|d| d.readiness_delay) {
            Some(d) => self.timing.scale(d),
            None => self.timing().pod_readiness_delay,
        }
    }

    /// Injected faults.
    pub fn faults(&self) -> &FaultSpec {
        &self.faults
    }

    /// Latency added to every API call.
    pub fn api_latency(&self) -> Duration {
        self.faults.api_latency
    }

    /// Share of API calls answered with a 5xx.
    pub fn api_error_rate(&self) -> f64 {
        self.faults.api_error_rate
    }

    /// Whether pods of deployment `namespace/name` never become Ready.
    pub fn never_ready(&self, namespace: &str, deployment: &str) -> bool {
        self.faults
            .never_ready
            .iter()
            .any(|f| f.namespace == namespace && f.deployment == deployment)
    }

    /// How many nodes of `group` stay NotReady.
    pub fn not_ready_nodes(&self, group: &str) -> u32 {
        self.faults
            .not_ready_nodes
            .iter()
            .filter(|f| f.node_group == group)
            .map(|f| f.count)
            .sum()
    }

    /// Whether node `index` of `group` becomes Ready (the group's last `count` nodes of a
    /// `notReadyNodes` fault do not).
    pub fn node_becomes_ready(&self, group: &str, index: u32) -> bool {
        let nodes = self.node_group(group).map_or(0, |g| g.nodes);
        index < nodes.saturating_sub(self.not_ready_nodes(group))
    }

    /// The deployment `namespace/name`.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<&DeploymentSpec> {
        self.deployments
            .iter()
            .find(|d| d.namespace == namespace && d.name == name)
    }

    /// The node group `name`.
    pub fn node_group(&self, name: &str) -> Option<&NodeGroupSpec> {
        self.node_groups.iter().find(|g| g.name == name)
    }

    /// The kubelet version of `group`'s nodes (its `kubeletVersion`, else the cluster's).
    pub fn kubelet_version(&self, group: &NodeGroupSpec) -> KubeVersion {
        group.kubelet_version.unwrap_or(self.kubernetes_version)
    }

    /// All namespaces, system ones first, each once, in creation order.
    pub fn all_namespaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = SYSTEM_NAMESPACES.to_vec();
        for ns in &self.namespaces {
            if !out.contains(&ns.as_str()) {
                out.push(ns);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and where they are in the file.
// ---------------------------------------------------------------------------------------------

/// A scenario that could not be read or is not valid. Display reads like
/// `fleet.yaml:12:7: deployments[1].replicas: invalid type: string "four", expected u32`.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read the scenario file: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, does not fit the format, or fails a check.
    #[error("{}", render_invalid(.file, *.line, *.column, .path, .message))]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line, where known.
        line: Option<usize>,
        /// 1-based column, where known.
        column: Option<usize>,
        /// The field, like `deployments[1].replicas` (empty for the whole file).
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn render_invalid(
    file: &str,
    line: Option<usize>,
    column: Option<usize>,
    path: &str,
    message: &str,
) -> String {
    let mut out = file.to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
        if let Some(column) = column {
            out.push_str(&format!(":{column}"));
        }
    }
    out.push_str(": ");
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

impl ScenarioError {
    /// 1-based line of the problem, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => *line,
            ScenarioError::Read { .. } => None,
        }
    }

    /// 1-based column of the problem, where known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { column, .. } => *column,
            ScenarioError::Read { .. } => None,
        }
    }

    /// What is wrong and how to fix it, without file, line or path.
    pub fn message(&self) -> String {
        match self {
            ScenarioError::Invalid { message, .. } => message.clone(),
            ScenarioError::Read { source, .. } => source.to_string(),
        }
    }

    /// The field path, like `deployments[1].replicas`.
    pub fn path(&self) -> &str {
        match self {
            ScenarioError::Invalid { path, .. } => path,
            ScenarioError::Read { .. } => "",
        }
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The top-level sections, for error context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    KubernetesVersion,
    Region,
    Timing,
    NodeGroups,
    Namespaces,
    Deployments,
    DaemonSets,
    Pods,
    Faults,
    Eks,
    Overrides,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::KubernetesVersion => "kubernetesVersion",
            Section::Region => "region",
            Section::Timing => "timing",
            Section::NodeGroups => "nodeGroups",
            Section::Namespaces => "namespaces",
            Section::Deployments => "deployments",
            Section::DaemonSets => "daemonSets",
            Section::Pods => "pods",
            Section::Faults => "faults",
            Section::Eks => "eks",
            Section::Overrides => "overrides",
        }
    }
}

/// A failed check: the field (from the top of the file) and what is wrong.
#[derive(Debug)]
struct Issue {
    section: Section,
    path: Vec<Seg>,
    message: String,
}

impl Issue {
    fn new(section: Section, path: Vec<Seg>, message: impl Into<String>) -> Issue {
        Issue {
            section,
            path,
            message: message.into(),
        }
    }

    fn into_error(self, file: &str, text: Option<&str>) -> ScenarioError {
        let loc = text.and_then(|t| locate(t, &self.path));
        ScenarioError::Invalid {
            file: file.to_string(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            path: path_string(&self.path),
            message: self.message,
        }
    }
}

/// Parses the text into the raw sections, with serde's errors located.
fn parse_raw(text: &str, file: &str) -> Result<RawScenario, ScenarioError> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).or_else(|e| {
        // An empty document (or only comments) means "all defaults".
        if matches!(
            serde_yaml::from_str::<serde_yaml::Value>(text),
            Ok(serde_yaml::Value::Null)
        ) {
            return Ok(RawScenario::default());
        }
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Err(yaml_error(file, &path, e.inner()))
    })
}

fn yaml_error(file: &str, path: &str, e: &serde_yaml::Error) -> ScenarioError {
    let mut message = e.to_string();
    let loc = e.location();
    if let Some(l) = &loc {
        for suffix in [
            format!(" at line {} column {}", l.line(), l.column()),
            format!(" at position {}", l.index()),
        ] {
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
                break;
            }
        }
    }
    // serde_yaml starts its message with the path it was at: this field's or an ancestor's.
    if let Some((head, tail)) = message.split_once(": ") {
        let boundary = path
            .get(head.len()..)
            .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']));
        if !head.is_empty() && path.starts_with(head) && boundary {
            message = tail.to_string();
        }
    }
    ScenarioError::Invalid {
        file: file.to_string(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        path: path.to_string(),
        message,
    }
}

const FOUND: &str = "__flotilla_scenario_located__";

/// Line and column (1-based) of the field at `path` in `text`: of its key when the path ends in a
/// key, of the element when it ends in an index. When the field is not in the text (a default),
/// of its nearest ancestor that is; `None` when no part of the path is.
///
/// It asks serde_yaml itself: a probe walks the document along the path and fails on reaching the
/// target, and serde_yaml stamps that error with the position of the node being read.
fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    (1..=path.len()).rev().find_map(|n| probe(text, &path[..n]))
}

fn probe(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    match Probe(path).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Walks to the node at `.0` and fails there.
struct Probe<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            d.deserialize_any(Hit)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(target), rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(KeyProbe {
            target,
            hit: rest.is_empty(),
        })? {
            if matched {
                map.next_value_seed(Probe(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let target = match self.0.first() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let mut i = 0;
        loop {
            let more = if Some(i) == target {
                seq.next_element_seed(Probe(&self.0[1..]))?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
}

/// Fails on whatever it is given: the target node.
struct Hit;

impl<'de> Visitor<'de> for Hit {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// Reads a mapping key: `Ok(true)` when it is the target; fails on it when it is the last step.
struct KeyProbe<'t> {
    target: &'t str,
    hit: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match (key == self.target, self.hit) {
            (true, true) => Err(E::custom(FOUND)),
            (matched, _) => Ok(matched),
        }
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------------

const DNS_LABEL_RULE: &str =
    "must be a lowercase RFC 1123 label: at most 63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value (also the name part of a qualified name when non-empty).
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A label key or taint key: `[prefix/]name`.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns_subdomain)
}

fn is_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_node_group_name(s: &str) -> bool {
    is_cluster_name(s) && s.len() <= 63
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() == 1
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

fn is_instance_type(s: &str) -> bool {
    match s.split_once('.') {
        Some((family, size)) => {
            !family.is_empty()
                && !size.is_empty()
                && family
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

/// Kubelet `--node-labels` in these domains are refused, except the node-owned ones.
fn is_reserved_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let reserved = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    let allowed = ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    reserved && !allowed
}

/// Checks one cluster's scenario; issue paths start at the top of the file.
impl ClusterScenario {
    fn check(&self) -> Result<(), Issue> {
        self.check_version()?;
        self.check_timing()?;
        self.check_node_groups()?;
        self.check_namespaces()?;
        self.check_workloads()?;
        self.check_faults()?;
        self.check_eks()
    }

    fn check_version(&self) -> Result<(), Issue> {
        let v = self.kubernetes_version;
        if !SUPPORTED_MINORS.contains(&v.minor()) {
            let list: Vec<String> = SUPPORTED_MINORS.map(|m| format!("\"1.{m}\"")).collect();
            return Err(Issue::new(
                Section::KubernetesVersion,
                at!["kubernetesVersion"],
                format!("Kubernetes {v} is not simulated; use one of {}", list.join(", ")),
            ));
        }
        if !is_region(&self.region) {
            return Err(Issue::new(
                Section::Region,
                at!["region"],
                format!(
                    "{:?} is not an AWS region name; write one like \"us-west-2\"",
                    self.region
                ),
            ));
        }
        Ok(())
    }

    fn check_timing(&self) -> Result<(), Issue> {
        let t = &self.timing;
        let err = |field: &str, msg: String| Issue::new(Section::Timing, at!["timing", field], msg);
        if !t.time_scale.is_finite() || t.time_scale < 0.0 || t.time_scale > 1000.0 {
            return Err(err(
                "timeScale",
                format!(
                    "{} is out of range; use a number from 0 to 1000 (1.0 = as written)",
                    t.time_scale
                ),
            ));
        }
        let fields = [
            ("podStartDelay", t.pod_start_delay),
            ("podReadinessDelay", t.pod_readiness_delay),
            ("terminationSeconds", t.termination_seconds),
            ("nodeReadyDelay", t.node_ready_delay),
        ];
        for (field, d) in fields {
            if let Some(d) = d {
                if scale_duration(d, t.time_scale).is_none_or(|s| s > MAX_DELAY) {
                    return Err(err(
                        field,
                        format!("{} is too long; at most 24h after timeScale", format_duration(d)),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_node_groups(&self) -> Result<(), Issue> {
        let s = Section::NodeGroups;
        let mut names = BTreeSet::new();
        for (i, g) in self.node_groups.iter().enumerate() {
            let at = |field: &str| at!["nodeGroups", i, field];
            if !is_node_group_name(&g.name) {
                return Err(Issue::new(s, at("name"), format!(
                    "{:?} is not a valid node group name: use 1-63 letters, digits, '-' and '_', starting with a letter or digit",
                    g.name
                )));
            }
            if !names.insert(g.name.as_str()) {
                return Err(Issue::new(
                    s,
                    at("name"),
                    format!(
                        "duplicate node group {:?}; node group names must be unique",
                        g.name
                    ),
                ));
            }
            if g.nodes > MAX_NODES_PER_GROUP {
                return Err(Issue::new(
                    s,
                    at("nodes"),
                    format!(
                        "{} nodes is more than the simulator allows; use at most {MAX_NODES_PER_GROUP}",
                        g.nodes
                    ),
                ));
            }
            if !is_instance_type(&g.instance_type) {
                return Err(Issue::new(
                    s,
                    at("instanceType"),
                    format!(
                        "{:?} is not an EC2 instance type; write one like \"m5.xlarge\"",
                        g.instance_type
                    ),
                ));
            }
            let cap = |field: &str| at!["nodeGroups", i, "capacity", field];
            if g.capacity.pods == 0 || g.capacity.pods > 1000 {
                return Err(Issue::new(
                    s,
                    cap("pods"),
                    format!("{} is out of range; use 1 to 1000 pods per node", g.capacity.pods),
                ));
            }
            if g.capacity.cpu.millis() == 0 {
                return Err(Issue::new(s, cap("cpu"), "must be more than 0; write e.g. \"4\""));
            }
            let reserved = build::reserved_memory_bytes(g.capacity.pods);
            if g.capacity.memory.value() <= reserved {
                return Err(Issue::new(s, cap("memory"), format!(
                    "{} leaves nothing allocatable: EKS reserves {}Mi for the kubelet and eviction with {} pods; use more memory (e.g. \"16Gi\") or fewer pods",
                    g.capacity.memory, reserved >> 20, g.capacity.pods
                )));
            }
            for (key, value) in &g.labels {
                let at = at!["nodeGroups", i, "labels", key.as_str()];
                check_label(s, at.clone(), key, value)?;
                if is_reserved_label(key) {
                    return Err(Issue::new(s, at, format!(
                        "{key:?} is in a reserved namespace (kubernetes.io / k8s.io) the kubelet may not set; use node.kubernetes.io/… or your own prefix"
                    )));
                }
            }
            let mut taints = BTreeSet::new();
            for (j, t) in g.taints.iter().enumerate() {
                let at = |field: &str| at!["nodeGroups", i, "taints", j, field];
                if !is_qualified_name(&t.key) {
                    return Err(Issue::new(
                        s,
                        at("key"),
                        format!(
                            "{:?} is not a valid taint key (a label key such as example.com/dedicated)",
                            t.key
                        ),
                    ));
                }
                if !is_label_value(&t.value) {
                    return Err(Issue::new(
                        s,
                        at("value"),
                        format!(
                            "{:?} is not a valid taint value (at most 63 letters, digits, '-', '_', '.')",
                            t.value
                        ),
                    ));
                }
                if !taints.insert((t.key.as_str(), t.effect)) {
                    return Err(Issue::new(
                        s,
                        at("key"),
                        format!(
                            "duplicate taint {}:{}; taints must be unique by key and effect",
                            t.key,
                            t.effect.as_str()
                        ),
                    ));
                }
            }
            if let Some(k) = g.kubelet_version {
                let cp = self.kubernetes_version.minor();
                if k.minor() > cp || k.minor() + MAX_KUBELET_SKEW < cp {
                    return Err(Issue::new(s, at("kubeletVersion"), format!(
                        "kubelet {k} cannot join a {} control plane: kubelets may be up to {MAX_KUBELET_SKEW} minor versions older and never newer; use 1.{} to 1.{cp}",
                        self.kubernetes_version, cp.saturating_sub(MAX_KUBELET_SKEW)
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_namespaces(&self) -> Result<(), Issue> {
        let mut seen = BTreeSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            let at = at!["namespaces", i];
            if !is_dns_label(ns) {
                return Err(Issue::new(
                    Section::Namespaces,
                    at,
                    format!("{ns:?} is not a valid namespace name: it {DNS_LABEL_RULE}"),
                ));
            }
            if !seen.insert(ns.as_str()) {
                return Err(Issue::new(
                    Section::Namespaces,
                    at,
                    format!("duplicate namespace {ns:?}; list each namespace once"),
                ));
            }
        }
        Ok(())
    }

    fn check_namespace_ref(&self, section: Section, at: Vec<Seg>, ns: &str) -> Result<(), Issue> {
        if self.all_namespaces().contains(&ns) {
            return Ok(());
        }
        Err(Issue::new(
            section,
            at,
            format!(
                "namespace {ns:?} is not declared; add it to `namespaces` or use one of: {}",
                self.all_namespaces().join(", ")
            ),
        ))
    }

    fn check_workloads(&self) -> Result<(), Issue> {
        let s = Section::Deployments;
        let mut seen = BTreeSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            let at = |field: &str| at!["deployments", i, field];
            let w = Workload {
                section: s,
                base: at!["deployments", i],
                name: &d.name,
                namespace: &d.namespace,
                image: d.image.as_deref(),
                node_selector: &d.node_selector,
                tolerations: &d.tolerations,
                priority_class_name: d.priority_class_name.as_deref(),
            };
            w.check(self)?;
            if !seen.insert((d.namespace.as_str(), d.name.as_str())) {
                return Err(Issue::new(
                    s,
                    at("name"),
                    format!(
                        "duplicate deployment {}/{}; names must be unique per namespace",
                        d.namespace, d.name
                    ),
                ));
            }
            if d.replicas > MAX_REPLICAS {
                return Err(Issue::new(
                    s,
                    at("replicas"),
                    format!(
                        "{} replicas is more than the simulator allows; use at most {MAX_REPLICAS}",
                        d.replicas
                    ),
                ));
            }
            if d.max_surge.is_zero() && d.max_unavailable.is_zero() {
                return Err(Issue::new(
                    s,
                    at("maxUnavailable"),
                    "may not be 0 when maxSurge is 0; allow some surge or some unavailability",
                ));
            }
            if let IntOrPercent::Percent(p) = d.max_unavailable {
                if p > 100 {
                    return Err(Issue::new(
                        s,
                        at("maxUnavailable"),
                        format!("{p}% must not be greater than 100%"),
                    ));
                }
            }
            if let Some(r) = d.readiness_delay {
                if scale_duration(r, self.timing.time_scale).is_none_or(|x| x > MAX_DELAY) {
                    return Err(Issue::new(
                        s,
                        at("readinessDelay"),
                        format!("{} is too long; at most 24h after timeScale", format_duration(r)),
                    ));
                }
            }
            if let Some(p) = &d.pdb {
                let pdb = |field: &str| at!["deployments", i, "pdb", field];
                match (p.min_available, p.max_unavailable) {
                    (Some(_), Some(_)) => {
                        return Err(Issue::new(s, pdb("maxUnavailable"), "minAvailable and maxUnavailable are mutually exclusive in a PodDisruptionBudget; keep one of them"));
                    }
                    (None, None) => {
                        return Err(Issue::new(
                            s,
                            at!["deployments", i, "pdb"],
                            "set one of minAvailable or maxUnavailable (e.g. {minAvailable: 1})",
                        ));
                    }
                    (Some(IntOrPercent::Percent(v)), None) if v > 100 => {
                        return Err(Issue::new(
                            s,
                            pdb("minAvailable"),
                            format!("{v}% must not be greater than 100%"),
                        ));
                    }
                    (None, Some(IntOrPercent::Percent(v))) if v > 100 => {
                        return Err(Issue::new(
                            s,
                            pdb("maxUnavailable"),
                            format!("{v}% must not be greater than 100%"),
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(h) = &d.hpa {
                let hpa = |field: &str| at!["deployments", i, "hpa", field];
                if h.min_replicas == 0 {
                    return Err(Issue::new(s, hpa("minReplicas"), "must be at least 1"));
                }
                if h.max_replicas > MAX_REPLICAS {
                    return Err(Issue::new(
                        s,
                        hpa("maxReplicas"),
                        format!(
                            "{} is more than the simulator allows; use at most {MAX_REPLICAS}",
                            h.max_replicas
                        ),
                    ));
                }
                if h.min_replicas > h.max_replicas {
                    return Err(Issue::new(s, hpa("minReplicas"), format!(
                        "minReplicas ({}) must not be greater than maxReplicas ({}); raise maxReplicas or lower minReplicas",
                        h.min_replicas, h.max_replicas
                    )));
                }
                if h.target_cpu_utilization == 0 || h.target_cpu_utilization > 1000 {
                    return Err(Issue::new(
                        s,
                        hpa("targetCPUUtilization"),
                        format!(
                            "{} is out of range; use a percentage from 1 to 1000",
                            h.target_cpu_utilization
                        ),
                    ));
                }
                if d.cpu.as_ref().is_none_or(|c| c.millis() == 0) {
                    return Err(Issue::new(
                        s,
                        at("cpu"),
                        "an HPA on CPU utilization needs a cpu request; set cpu (e.g. 100m)",
                    ));
                }
            }
        }

        let s = Section::DaemonSets;
        let mut seen = BTreeSet::new();
        for (i, d) in self.daemon_sets.iter().enumerate() {
            Workload {
                section: s,
                base: at!["daemonSets", i],
                name: &d.name,
                namespace: &d.namespace,
                image: d.image.as_deref(),
                node_selector: &d.node_selector,
                tolerations: &d.tolerations,
                priority_class_name: d.priority_class_name.as_deref(),
            }
            .check(self)?;
            if !seen.insert((d.namespace.as_str(), d.name.as_str())) {
                return Err(Issue::new(
                    s,
                    at!["daemonSets", i, "name"],
                    format!(
                        "duplicate daemon set {}/{}; names must be unique per namespace",
                        d.namespace, d.name
                    ),
                ));
            }
            match d.max_unavailable {
                IntOrPercent::Int(0) | IntOrPercent::Percent(0) => {
                    return Err(Issue::new(
                        s,
                        at!["daemonSets", i, "maxUnavailable"],
                        "may not be 0 (daemon sets here roll without surge); use 1 or a percentage",
                    ));
                }
                IntOrPercent::Percent(p) if p > 100 => {
                    return Err(Issue::new(
                        s,
                        at!["daemonSets", i, "maxUnavailable"],
                        format!("{p}% must not be greater than 100%"),
                    ));
                }
                _ => {}
            }
        }

        let s = Section::Pods;
        let mut seen = BTreeSet::new();
        for (i, p) in self.pods.iter().enumerate() {
            Workload {
                section: s,
                base: at!["pods", i],
                name: &p.name,
                namespace: &p.namespace,
                image: p.image.as_deref(),
                node_selector: &p.node_selector,
                tolerations: &p.tolerations,
                priority_class_name: None,
            }
            .check(self)?;
            if !seen.insert((p.namespace.as_str(), p.name.as_str())) {
                return Err(Issue::new(
                    s,
                    at!["pods", i, "name"],
                    format!(
                        "duplicate pod {}/{}; names must be unique per namespace",
                        p.namespace, p.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_faults(&self) -> Result<(), Issue> {
        let s = Section::Faults;
        let f = &self.faults;
        if !f.api_error_rate.is_finite() || !(0.0..=1.0).contains(&f.api_error_rate) {
            return Err(Issue::new(
                s,
                at!["faults", "apiErrorRate"],
                format!(
                    "{} is not a share of calls; use a number from 0.0 to 1.0 (0.1 = one call in ten fails)",
                    f.api_error_rate
                ),
            ));
        }
        if f.api_latency > MAX_DELAY {
            return Err(Issue::new(
                s,
                at!["faults", "apiLatency"],
                format!("{} is too long; at most 24h", format_duration(f.api_latency)),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, n) in f.never_ready.iter().enumerate() {
            if self.deployment(&n.namespace, &n.deployment).is_none() {
                let known: Vec<String> = self
                    .deployments
                    .iter()
                    .map(|d| format!("{}/{}", d.namespace, d.name))
                    .collect();
                return Err(Issue::new(
                    s,
                    at!["faults", "neverReady", i, "deployment"],
                    format!(
                        "no deployment {}/{} in `deployments`; known: {}",
                        n.namespace,
                        n.deployment,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            if !seen.insert((n.namespace.as_str(), n.deployment.as_str())) {
                return Err(Issue::new(
                    s,
                    at!["faults", "neverReady", i],
                    format!("{}/{} is listed twice; list it once", n.namespace, n.deployment),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, n) in f.not_ready_nodes.iter().enumerate() {
            let Some(g) = self.node_group(&n.node_group) else {
                let known: Vec<&str> = self.node_groups.iter().map(|g| g.name.as_str()).collect();
                return Err(Issue::new(
                    s,
                    at!["faults", "notReadyNodes", i, "nodeGroup"],
                    format!(
                        "no node group {:?} in `nodeGroups`; known: {}",
                        n.node_group,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            if !seen.insert(n.node_group.as_str()) {
                return Err(Issue::new(
                    s,
                    at!["faults", "notReadyNodes", i, "nodeGroup"],
                    format!(
                        "node group {:?} is listed twice; give one entry with the total count",
                        n.node_group
                    ),
                ));
            }
            if n.count > g.nodes {
                return Err(Issue::new(
                    s,
                    at!["faults", "notReadyNodes", i, "count"],
                    format!(
                        "{} is more than the {} nodes of {:?}; use at most {}",
                        n.count, g.nodes, g.name, g.nodes
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_label(section: Section, at: Vec<Seg>, key: &str, value: &str) -> Result<(), Issue> {
    if !is_qualified_name(key) {
        return Err(Issue::new(section, at, format!(
            "{key:?} is not a valid label key: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_', '.'"
        )));
    }
    if !is_label_value(value) {
        return Err(Issue::new(section, at, format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// The parts every workload kind shares, for checking.
struct Workload<'a> {
    section: Section,
    base: Vec<Seg>,
    name: &'a str,
    namespace: &'a str,
    image: Option<&'a str>,
    node_selector: &'a BTreeMap<String, String>,
    tolerations: &'a [TolerationSpec],
    priority_class_name: Option<&'a str>,
}

impl Workload<'_> {
    fn at(&self, rest: Vec<Seg>) -> Vec<Seg> {
        let mut p = self.base.clone();
        p.extend(rest);
        p
    }

    fn check(&self, c: &ClusterScenario) -> Result<(), Issue> {
        let s = self.section;
        if !is_dns_label(self.name) {
            return Err(Issue::new(
                s,
                self.at(at!["name"]),
                format!("{:?} is not a valid name: it {DNS_LABEL_RULE}", self.name),
            ));
        }
        c.check_namespace_ref(s, self.at(at!["namespace"]), self.namespace)?;
        if let Some(image) = self.image {
            if image.is_empty() || image.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                return Err(Issue::new(
                    s,
                    self.at(at!["image"]),
                    format!(
                        "{image:?} is not an image reference; write one like public.ecr.aws/nginx/nginx:1.27"
                    ),
                ));
            }
        }
        for (key, value) in self.node_selector {
            check_label(s, self.at(at!["nodeSelector", key.as_str()]), key, value)?;
        }
        for (j, t) in self.tolerations.iter().enumerate() {
            let at = |field: &str| self.at(at!["tolerations", j, field]);
            if !t.key.is_empty() && !is_qualified_name(&t.key) {
                return Err(Issue::new(
                    s,
                    at("key"),
                    format!("{:?} is not a valid taint key", t.key),
                ));
            }
            match t.operator {
                TolerationOperator::Exists if !t.value.is_empty() => {
                    return Err(Issue::new(
                        s,
                        at("value"),
                        "must be empty when operator is Exists; drop the value or use operator Equal",
                    ));
                }
                TolerationOperator::Equal if t.key.is_empty() => {
                    return Err(Issue::new(
                        s,
                        at("operator"),
                        "an empty key needs operator Exists (which tolerates every taint)",
                    ));
                }
                _ => {}
            }
            if !is_label_value(&t.value) {
                return Err(Issue::new(
                    s,
                    at("value"),
                    format!("{:?} is not a valid taint value", t.value),
                ));
            }
            if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
                return Err(Issue::new(
                    s,
                    at("tolerationSeconds"),
                    "only applies with effect NoExecute; set effect: NoExecute or drop it",
                ));
            }
        }
        if let Some(pc) = self.priority_class_name {
            if !SYSTEM_PRIORITY_CLASSES.contains(&pc) {
                return Err(Issue::new(
                    s,
                    self.at(at!["priorityClassName"]),
                    format!(
                        "no PriorityClass {pc:?} in the cluster; use {} or {}",
                        SYSTEM_PRIORITY_CLASSES[0], SYSTEM_PRIORITY_CLASSES[1]
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../scenarios/example.yaml");

    fn err(text: &str) -> ScenarioError {
        match Scenario::from_yaml(text, "fleet.yaml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    /// Asserts the error names the field path and the line, and mentions `needle`.
    fn assert_err(text: &str, path: &str, line: usize, needle: &str) -> ScenarioError {
        let e = err(text);
        let shown = e.to_string();
        assert_eq!(e.path(), path, "{shown}");
        assert_eq!(e.line(), Some(line), "{shown}");
        assert!(shown.starts_with(&format!("fleet.yaml:{line}:")), "{shown}");
        assert!(shown.contains(&format!(": {path}: ")), "{shown}");
        assert!(shown.contains(needle), "{shown}");
        e
    }

    #[test]
    fn default_scenario_is_valid_and_as_specified() {
        let s = Scenario::default_scenario();
        s.validate().unwrap();
        assert_eq!(s.kubernetes_version, KubeVersion::new(33));
        assert_eq!(s.node_groups.len(), 1);
        let g = &s.node_groups[0];
        assert_eq!(
            (g.name.as_str(), g.kind, g.nodes),
            ("ng-old", NodeGroupType::SelfManaged, 4)
        );
        assert_eq!(
            (
                g.capacity.pods,
                g.capacity.cpu.millis(),
                g.capacity.memory.value()
            ),
            (30, 4000, 16 << 30)
        );
        assert_eq!(s.namespaces, vec!["shop"]);
        let names: Vec<_> = s
            .deployments
            .iter()
            .map(|d| (d.namespace.as_str(), d.name.as_str(), d.replicas))
            .collect();
        assert_eq!(
            names,
            vec![
                ("shop", "web", 4),
                ("shop", "api", 3),
                ("shop", "worker", 2),
                ("shop", "cache", 1),
                ("kube-system", "coredns", 2),
                ("kube-system", "aws-load-balancer-controller", 2),
            ]
        );
        assert_eq!(s.pods.len(), 1);
        assert_eq!(
            s.daemon_sets.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["aws-node", "kube-proxy"]
        );
        assert_eq!(s.timing.resolve(), TimingPreset::Fast.delays());
    }

    #[test]
    fn empty_file_is_the_default_scenario() {
        assert_eq!(
            Scenario::from_yaml("", "f.yaml").unwrap(),
            Scenario::default_scenario()
        );
        assert_eq!(
            Scenario::from_yaml("# nothing\n", "f.yaml").unwrap(),
            Scenario::default_scenario()
        );
        assert_eq!(
            Scenario::from_yaml("{}", "f.yaml").unwrap(),
            Scenario::default_scenario()
        );
    }

    #[test]
    fn default_scenario_round_trips_through_yaml() {
        let s = Scenario::default_scenario();
        let text = s.to_yaml();
        assert_eq!(Scenario::from_yaml(&text, "rt.yaml").unwrap(), s, "{text}");
    }

    const CUSTOM: &str = r#"
kubernetesVersion: "1.34"
region: eu-west-1
timing:
  preset: realistic
  timeScale: 0.5
  podStartDelay: 2s
  terminationSeconds: 1m30s
nodeGroups:
  - name: blue
    type: managed
    nodes: 3
    instanceType: c7g.large
    capacity: {pods: 29, cpu: 2, memory: 4Gi}
    labels: {tier: "1"}
    taints: [{key: example.com/gpu, effect: NoExecute}]
    kubeletVersion: "1.32"
namespaces: [apps]
deployments:
  - name: front
    namespace: apps
    replicas: 5
    image: example.com/front:v2
    cpu: 0.5
    memory: 1e9
    emptyDir: true
    terminationGracePeriodSeconds: 45
    readinessDelay: 750ms
    maxSurge: 1
    maxUnavailable: 0
    nodeSelector: {kubernetes.io/arch: arm64}
    tolerations: [{key: example.com/gpu, operator: Exists, effect: NoExecute, tolerationSeconds: 60}]
    pdb: {maxUnavailable: 20%, unhealthyPodEvictionPolicy: AlwaysAllow}
    hpa: {maxReplicas: 9}
daemonSets:
  - {name: agent, namespace: apps, maxUnavailable: 2, tolerations: [{operator: Exists}]}
pods:
  - {name: one-off, namespace: apps, emptyDir: true}
faults:
  apiLatency: 250ms
  apiErrorRate: 0.25
  neverReady: [{namespace: apps, deployment: front}]
  notReadyNodes: [{nodeGroup: blue, count: 2}]
"#;

    #[test]
    fn custom_yaml_reads_every_field_and_round_trips() {
        let s = Scenario::from_yaml(CUSTOM, "custom.yaml").unwrap();
        assert_eq!(s.kubernetes_version, KubeVersion::new(34));
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.timing.preset, TimingPreset::Realistic);
        let t = s.timing.resolve();
        assert_eq!(t.pod_start_delay, Duration::from_secs(1));
        assert_eq!(t.pod_readiness_delay, Duration::from_secs(5));
        assert_eq!(t.termination, Duration::from_secs(45));
        assert_eq!(t.node_ready_delay, Duration::from_secs(30));
        let g = &s.node_groups[0];
        assert_eq!(g.kind, NodeGroupType::Managed);
        assert_eq!(g.capacity.cpu.as_str(), "2");
        assert_eq!(g.labels.get("tier").map(String::as_str), Some("1"));
        assert_eq!(g.taints[0].effect, TaintEffect::NoExecute);
        assert_eq!(g.kubelet_version, Some(KubeVersion::new(32)));
        let d = &s.deployments[0];
        assert_eq!(d.cpu.as_ref().unwrap().millis(), 500);
        assert_eq!(d.memory.as_ref().unwrap().value(), 1_000_000_000);
        assert_eq!(
            (d.max_surge, d.max_unavailable),
            (IntOrPercent::Int(1), IntOrPercent::Int(0))
        );
        assert_eq!(
            d.pdb.as_ref().unwrap().max_unavailable,
            Some(IntOrPercent::Percent(20))
        );
        assert_eq!(
            d.hpa.as_ref().unwrap(),
            &HpaSpec {
                min_replicas: 1,
                max_replicas: 9,
                target_cpu_utilization: 80
            }
        );
        assert_eq!(d.tolerations[0].toleration_seconds, Some(60));
        assert_eq!(s.daemon_sets[0].max_unavailable, IntOrPercent::Int(2));
        assert!(s.pods[0].empty_dir);
        assert_eq!(s.faults.api_latency, Duration::from_millis(250));
        let c = s.for_cluster("any");
        assert_eq!(c.readiness_delay("apps", "front"), Duration::from_millis(375));
        assert_eq!(c.readiness_delay("apps", "nope"), Duration::from_secs(5));
        assert!(c.never_ready("apps", "front") && !c.never_ready("apps", "other"));
        assert_eq!(c.not_ready_nodes("blue"), 2);
        assert!(
            c.node_becomes_ready("blue", 0)
                && !c.node_becomes_ready("blue", 1)
                && !c.node_becomes_ready("blue", 2)
        );
        assert_eq!(c.api_error_rate(), 0.25);

        let text = s.to_yaml();
        assert_eq!(Scenario::from_yaml(&text, "rt.yaml").unwrap(), s, "{text}");
    }

    #[test]
    fn missing_sections_come_from_the_default() {
        let s = Scenario::from_yaml("faults: {apiErrorRate: 0.5}\n", "f.yaml").unwrap();
        let d = Scenario::default_scenario();
        assert_eq!(s.deployments, d.deployments);
        assert_eq!(s.node_groups, d.node_groups);
        assert_eq!(s.faults.api_error_rate, 0.5);
        let s = Scenario::from_yaml("pods: []\n", "f.yaml").unwrap();
        assert!(s.pods.is_empty());
    }

    #[test]
    fn overrides_replace_sections_per_cluster() {
        let text = r#"
overrides:
  sim-2: {faults: {apiErrorRate: 0.1}}
  sim-3:
    kubernetesVersion: "1.35"
    nodeGroups: [{name: ng-new, nodes: 2, kubeletVersion: "1.34"}]
"#;
        let s = Scenario::from_yaml(text, "f.yaml").unwrap();
        let one = s.for_cluster("sim-1");
        let two = s.for_cluster("sim-2");
        let three = s.for_cluster("sim-3");
        assert_eq!(one.api_error_rate(), 0.0);
        assert_eq!(two.api_error_rate(), 0.1);
        assert_eq!(two.node_groups, one.node_groups);
        assert_eq!(three.kubernetes_version, KubeVersion::new(35));
        assert_eq!(three.node_groups.len(), 1);
        assert_eq!(three.kubelet_version(&three.node_groups[0]), KubeVersion::new(34));
        assert_eq!(three.deployments, one.deployments);
        assert_eq!(three.api_error_rate(), 0.0);
        assert_eq!(s.unknown_overrides(&["sim-1", "sim-2"]), vec!["sim-3"]);
    }

    #[test]
    fn realistic_preset_times_time_scale() {
        let t = TimingSpec {
            preset: TimingPreset::Realistic,
            ..Default::default()
        }
        .resolve();
        assert_eq!(t.node_ready_delay, Duration::from_secs(60));
        assert_eq!(t.pod_start_delay, Duration::from_secs(5));
        assert_eq!(t.pod_readiness_delay, Duration::from_secs(10));
        assert_eq!(t.termination, Duration::from_secs(5));
        let s = Scenario::from_yaml("timing: {preset: realistic, timeScale: 0.1}\n", "f.yaml").unwrap();
        let t = s.for_cluster("x").timing();
        assert_eq!(t.node_ready_delay, Duration::from_secs(6));
        assert_eq!(t.pod_start_delay, Duration::from_millis(500));
        assert_eq!(t.pod_readiness_delay, Duration::from_secs(1));
        assert_eq!(t.termination, Duration::from_millis(500));
        let s = Scenario::from_yaml("timing: {timeScale: 0}\n", "f.yaml").unwrap();
        assert_eq!(s.timing.resolve().node_ready_delay, Duration::ZERO);
    }

    /// The format as first sketched (in the brief), verbatim.
    const SKETCH: &str = r#"
kubernetesVersion: "1.33"
timing:            # all durations as "500ms", "2s", "1m"; preset `fast` (default, for tests) or `realistic`
  preset: fast
  timeScale: 1.0   # multiplies every delay (realistic preset: e.g. 0.1 runs 10x faster)
  podStartDelay: 100ms       # scheduled -> Running
  podReadinessDelay: 300ms   # Running -> Ready (per deployment override allowed)
  terminationSeconds: 1s     # how long containers take to exit after SIGTERM (bounded by the pod's grace period)
  nodeReadyDelay: 1s         # a new node registers -> Ready (nodes EKS creates: new node groups, node group updates)
nodeGroups:
  - name: ng-old
    type: self-managed       # or managed (label eks.amazonaws.com/nodegroup=<name>, eks.amazonaws.com/capacityType=ON_DEMAND)
    nodes: 4
    instanceType: m5.xlarge
    capacity: {pods: 30, cpu: "4", memory: 16Gi}
    labels: {}
    taints: []               # {key, value, effect}
    kubeletVersion: "1.33"   # defaults to kubernetesVersion
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 4, cpu: 100m, memory: 128Mi, emptyDir: false,
     terminationGracePeriodSeconds: 30, readinessDelay: null, maxSurge: 25%, maxUnavailable: 25%,
     nodeSelector: {}, tolerations: [], pdb: {minAvailable: 3}, hpa: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}}
daemonSets: [{name: aws-node, namespace: kube-system}]
pods: [{name: debug-shell, namespace: shop}]
faults:
  apiLatency: 0ms            # added to every API call
  apiErrorRate: 0.0          # share of calls answered 5xx (0.0..=1.0)
  neverReady: [{namespace: shop, deployment: web}]   # pods that never become Ready
  notReadyNodes: [{nodeGroup: ng-old, count: 1}]     # nodes that stay NotReady
overrides:                   # per cluster name: any of the top-level sections, replacing that section
  sim-2: {faults: {apiErrorRate: 0.1}}
"#;

    #[test]
    fn the_sketched_format_parses() {
        let s = Scenario::from_yaml(SKETCH, "sketch.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.deployments.len(), 1);
        assert_eq!(s.timing.resolve(), TimingPreset::Fast.delays());
        let one = s.for_cluster("sim-1");
        assert!(one.never_ready("shop", "web"));
        assert!(!one.node_becomes_ready("ng-old", 3));
        assert_eq!(s.for_cluster("sim-2").api_error_rate(), 0.1);
        assert!(s.for_cluster("sim-2").faults().never_ready.is_empty());
    }

    #[test]
    fn example_file_parses() {
        let s = Scenario::from_yaml(EXAMPLE, "example.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.node_groups.len(), 2);
        assert_eq!(s.deployments.len(), 7);
        assert_eq!(s.overrides.len(), 2);
        let three = s.for_cluster("sim-3");
        assert_eq!(three.timing().node_ready_delay, Duration::from_secs(6));
        assert_eq!(three.kubernetes_version, KubeVersion::new(34));
        assert_eq!(s.for_cluster("sim-2").api_error_rate(), 0.1);
        assert!(s.for_cluster("sim-1").never_ready("shop", "api"));
        assert_eq!(
            s.for_cluster("sim-1").readiness_delay("shop", "api"),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn type_errors_name_file_line_column_and_field() {
        let text = "deployments:\n  - name: web\n    replicas: 2\n  - name: api\n    replicas: four\n";
        assert_eq!(
            err(text).to_string(),
            "fleet.yaml:5:15: deployments[1].replicas: invalid type: string \"four\", expected u32"
        );
        assert_err(
            "deployments:\n  - {name: web, replicas: -1}\n",
            "deployments[0].replicas",
            2,
            "integer `-1`",
        );
        assert_err(
            "deployments:\n  - name: web\n    replica: 2\n",
            "deployments[0].replica",
            3,
            "unknown field `replica`",
        );
        assert_err(
            "deployments:\n  - replicas: 2\n",
            "deployments[0]",
            2,
            "missing field `name`",
        );
        assert_err(
            "nodeGroups:\n- name: a\n  type: unmanaged\n",
            "nodeGroups[0].type",
            3,
            "`self-managed` or `managed`",
        );
        assert_err("foo: 1\n", "foo", 1, "unknown field `foo`");
        assert_err(
            "overrides:\n  sim-2:\n    overrides: {}\n",
            "overrides.sim-2.overrides",
            3,
            "unknown field `overrides`",
        );
        assert_err(
            "nodeGroups:\n- name: a\n  labels: {x: 1, x: 2}\n",
            "nodeGroups[0].labels",
            3,
            "duplicate key `x`",
        );
    }

    #[test]
    fn bad_values_name_the_field_and_line() {
        assert_err(
            "timing:\n  podStartDelay: 5 seconds\n",
            "timing.podStartDelay",
            2,
            "invalid duration \"5 seconds\"",
        );
        assert_err(
            "timing:\n  nodeReadyDelay: 5\n",
            "timing.nodeReadyDelay",
            2,
            "write e.g. \"5s\"",
        );
        assert_err(
            "faults:\n  apiLatency: -1s\n",
            "faults.apiLatency",
            2,
            "must not be negative",
        );
        assert_err(
            "nodeGroups:\n- name: a\n  capacity: {memory: 16gb}\n",
            "nodeGroups[0].capacity.memory",
            3,
            "invalid quantity \"16gb\"",
        );
        assert_err(
            "deployments:\n- name: a\n  cpu: -1\n",
            "deployments[0].cpu",
            3,
            "must not be negative",
        );
        assert_err(
            "deployments:\n- name: a\n  maxSurge: 25\n  maxUnavailable: \"10\"\n",
            "deployments[0].maxUnavailable",
            4,
            "\"25%\"",
        );
        assert_err(
            "kubernetesVersion: \"1.3x\"\n",
            "kubernetesVersion",
            1,
            "expected \"1.<minor>\"",
        );
        assert_err(
            "kubernetesVersion: \"2.1\"\n",
            "kubernetesVersion",
            1,
            "expected \"1.<minor>\"",
        );
        assert_err("kubernetesVersion: 1.33\n", "kubernetesVersion", 1, "quote it");
        assert_err(
            "kubernetesVersion: \"1.32\"\n",
            "kubernetesVersion",
            1,
            "use one of \"1.33\", \"1.34\", \"1.35\"",
        );
    }

    #[test]
    fn semantic_errors_name_the_field_and_line() {
        assert_err(
            "deployments:\n- name: web\n  pdb:\n    minAvailable: 1\n    maxUnavailable: 1\n",
            "deployments[0].pdb.maxUnavailable",
            5,
            "mutually exclusive",
        );
        assert_err(
            "deployments:\n- name: web\n  pdb: {}\n",
            "deployments[0].pdb",
            3,
            "set one of minAvailable or maxUnavailable",
        );
        assert_err(
            "deployments:\n- name: w\n  cpu: 100m\n  hpa: {minReplicas: 5, maxReplicas: 3}\n",
            "deployments[0].hpa.minReplicas",
            4,
            "must not be greater than maxReplicas (3)",
        );
        assert_err(
            "deployments:\n- name: w\n  hpa: {maxReplicas: 3}\n",
            "deployments[0].cpu",
            2,
            "needs a cpu request",
        );
        assert_err(
            "deployments:\n- {name: web}\n- {name: api}\n- {name: web}\n",
            "deployments[2].name",
            4,
            "duplicate deployment default/web",
        );
        assert_err(
            "nodeGroups:\n- name: a\n- name: a\n",
            "nodeGroups[1].name",
            3,
            "duplicate node group",
        );
        assert_err(
            "faults:\n  apiErrorRate: 1.5\n",
            "faults.apiErrorRate",
            2,
            "from 0.0 to 1.0",
        );
        assert_err(
            "faults:\n  apiErrorRate: -0.1\n",
            "faults.apiErrorRate",
            2,
            "from 0.0 to 1.0",
        );
        assert_err(
            "faults:\n  neverReady:\n  - {namespace: shop, deployment: webb}\n",
            "faults.neverReady[0].deployment",
            3,
            "no deployment shop/webb",
        );
        assert_err(
            "faults:\n  notReadyNodes:\n    - nodeGroup: ng-new\n",
            "faults.notReadyNodes[0].nodeGroup",
            3,
            "no node group \"ng-new\" in `nodeGroups`; known: ng-old",
        );
        assert_err(
            "faults:\n  notReadyNodes: [{nodeGroup: ng-old, count: 5}]\n",
            "faults.notReadyNodes[0].count",
            2,
            "at most 4",
        );
        assert_err("namespaces: [shop, Shop]\n", "namespaces[1]", 1, "RFC 1123");
        assert_err(
            "namespaces: [shop, shop]\n",
            "namespaces[1]",
            1,
            "duplicate namespace",
        );
        assert_err(
            "deployments:\n- {name: a, namespace: nope}\n",
            "deployments[0].namespace",
            2,
            "add it to `namespaces`",
        );
        assert_err(
            "nodeGroups:\n- {name: a, kubeletVersion: \"1.29\"}\n",
            "nodeGroups[0].kubeletVersion",
            2,
            "use 1.30 to 1.33",
        );
        assert_err(
            "nodeGroups:\n- {name: a, capacity: {memory: 512Mi}}\n",
            "nodeGroups[0].capacity.memory",
            2,
            "EKS reserves 685Mi",
        );
        assert_err(
            "nodeGroups:\n- {name: a, labels: {kubernetes.io/role: x}}\n",
            "nodeGroups[0].labels.kubernetes.io/role",
            2,
            "reserved",
        );
        assert_err(
            "timing:\n  timeScale: .nan\n",
            "timing.timeScale",
            2,
            "out of range",
        );
        assert_err(
            "deployments:\n- name: a\n  tolerations:\n  - {key: k, operator: Exists, value: v}\n",
            "deployments[0].tolerations[0].value",
            4,
            "must be empty when operator is Exists",
        );
        assert_err(
            "deployments:\n- {name: a, priorityClassName: high}\n",
            "deployments[0].priorityClassName",
            2,
            "no PriorityClass",
        );
        assert_err(
            "deployments:\n- {name: a, maxSurge: 0, maxUnavailable: 0%}\n",
            "deployments[0].maxUnavailable",
            2,
            "may not be 0",
        );
        assert_err("region: Oregon\n", "region", 1, "not an AWS region");
    }

    #[test]
    fn errors_inside_overrides_name_the_override() {
        assert_err(
            "overrides:\n  sim-2:\n    faults:\n      apiErrorRate: 1.5\n",
            "overrides.sim-2.faults.apiErrorRate",
            4,
            "from 0.0 to 1.0",
        );
        // The override drops the node group the base faults refer to: the error is in the base
        // section, and says for which cluster.
        let e = assert_err(
            "faults:\n  notReadyNodes: [{nodeGroup: ng-old}]\noverrides:\n  sim-3:\n    nodeGroups: [{name: ng-new}]\n",
            "faults.notReadyNodes[0].nodeGroup",
            2,
            "no node group \"ng-old\"",
        );
        assert!(e.to_string().contains("in cluster \"sim-3\""), "{e}");
        assert_err(
            "overrides:\n  \"bad name\": {}\n",
            "overrides.bad name",
            2,
            "not a valid EKS cluster name",
        );
    }

    #[test]
    fn errors_in_defaulted_sections_say_so() {
        let e = err("namespaces: [prod]\n");
        let shown = e.to_string();
        assert_eq!(e.line(), None, "{shown}");
        assert!(
            shown.starts_with("fleet.yaml: deployments[0].namespace: namespace \"shop\" is not declared"),
            "{shown}"
        );
        assert!(
            shown.contains("comes from the built-in default scenario"),
            "{shown}"
        );
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let e = err("deployments:\n  - name: web\n   bad: [\n");
        assert!(e.line().is_some(), "{e}");
        assert!(e.to_string().starts_with("fleet.yaml:"), "{e}");
        let e = err("kubernetesVersion: \"1.33\"\n---\nregion: us-west-2\n");
        assert!(e.to_string().contains("more than one document"), "{e}");
        let e = err("- 1\n");
        assert!(e.to_string().contains("expected a scenario mapping"), "{e}");
    }

    #[test]
    fn locate_finds_keys_elements_and_nearest_ancestors() {
        let text = "a:\n  b: [x, {c: 1}]\n  'd': {e: f}\n";
        let p = |segs: Vec<Seg>| locate(text, &segs);
        assert_eq!(p(at!["a"]), Some((1, 1)));
        assert_eq!(p(at!["a", "b"]), Some((2, 3)));
        assert_eq!(p(at!["a", "b", 0]), Some((2, 7)));
        assert_eq!(p(at!["a", "b", 1, "c"]), Some((2, 11)));
        assert_eq!(p(at!["a", "d", "e"]), Some((3, 9)));
        assert_eq!(p(at!["a", "b", 5]), Some((2, 3)));
        assert_eq!(p(at!["a", "zz", "y"]), Some((1, 1)));
        assert_eq!(p(at!["nope"]), None);
        assert_eq!(locate("[unclosed", &[Seg::from("a")]), None);
    }

    #[test]
    fn durations_parse_and_print() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("250us"), Duration::from_micros(250));
        for bad in [
            "",
            "5",
            "5x",
            "s",
            "1..5s",
            "-1s",
            "1 s",
            ".s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(3725),
            Duration::from_nanos(1_000_001),
        ] {
            assert_eq!(ok(&format_duration(d)), d);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        let q = |s: &str| Amount::parse(s).unwrap();
        assert_eq!(q("100m").millis(), 100);
        assert_eq!(q("4").millis(), 4000);
        assert_eq!(q("0.5").millis(), 500);
        assert_eq!(q("16Gi").value(), 16 << 30);
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("1n").millis(), 1);
        assert_eq!(q("1n").value(), 1);
        assert_eq!(q("0").value(), 0);
        for bad in [
            "",
            "16gb",
            "-1",
            "1..2",
            "Gi",
            "1 Gi",
            "1e",
            "1e999",
            "99999999999999999999999999999999",
            ".",
        ] {
            assert!(Amount::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix of a real scenario, and every line of it dropped or mangled.
        let texts: Vec<String> = (0..EXAMPLE.len())
            .filter(|i| EXAMPLE.is_char_boundary(*i))
            .step_by(7)
            .map(|i| EXAMPLE[..i].to_string())
            .chain((0..EXAMPLE.lines().count()).flat_map(|skip| {
                let drop: String = EXAMPLE
                    .lines()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect();
                let mangle: String = EXAMPLE
                    .lines()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == skip {
                            format!("{}\n", l.replace(':', " :[").replace('-', "{"))
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                [drop, mangle]
            }))
            .chain(
                [
                    "\0",
                    "\t",
                    "*a",
                    "&a [*a, *a]",
                    "!!binary x",
                    "{: }",
                    "? [a]\n: b",
                    "overrides: {1: {}}",
                    "nodeGroups: [{name: a, nodes: 4294967295}]",
                ]
                .iter()
                .map(|s| s.to_string()),
            )
            .collect();
        for t in &texts {
            if let Ok(s) = Scenario::from_yaml(t, "g.yaml") {
                for name in s.overrides.keys() {
                    let _ = build::build_cluster(
                        &s.for_cluster(name),
                        name,
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    );
                }
            }
        }
    }
}
