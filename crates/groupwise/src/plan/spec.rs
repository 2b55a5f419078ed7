//! [`PlanSpec`]: a plan as the user names it (`--plan`, `config.json`), parsed once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PlanError;

/// A plan as named on the command line and in `config.json`: `1` (end-to-end), `1A` (the paper's
/// single-module plan with one boundary at the end), a module count `K`, or explicit `stage:block`
/// boundaries. [`Plan::from_spec`](super::Plan::from_spec) turns it into boundaries for an
/// architecture. Written in `config.json` as the string it was given (`"4"`, `"1A"`, `"1:2,3:4"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanSpec {
    /// `1`: one module trained through the head.
    EndToEnd,
    /// `1A`: one module with an auxiliary classifier at the end of the backbone.
    OneA,
    /// `K >= 2` modules: the paper's table for ResNet-32, else cost-balanced.
    Modules(usize),
    /// Explicit boundaries `(stage, block)`, in order.
    Boundaries(Vec<(usize, usize)>),
}

impl PlanSpec {
    /// The method's name in reports: `e2e`, `DGL K=4`, `GN-DGL G=2 K=4`, `1A G=4`, and for explicit
    /// boundaries `DGL K=3 (1:2,2:1,3:4)`.
    pub fn method(&self, groups: i64) -> String {
        let family = |k: String| match groups {
            1 => format!("DGL K={k}"),
            g => format!("GN-DGL G={g} K={k}"),
        };
        match self {
            PlanSpec::EndToEnd if groups == 1 => "e2e".into(),
            PlanSpec::EndToEnd => family("1".into()),
            PlanSpec::OneA => format!("1A G={groups}"),
            PlanSpec::Modules(k) => family(k.to_string()),
            PlanSpec::Boundaries(b) => family(format!("{} ({self})", b.len())),
        }
    }
}

impl FromStr for PlanSpec {
    type Err = PlanError;

    fn from_str(name: &str) -> Result<Self, PlanError> {
        let name = name.trim();
        let unknown = || PlanError::UnknownPlan(name.to_string());
        if name.contains(':') {
            return name
                .split(',')
                .map(|pair| {
                    let (s, b) = pair.split_once(':').ok_or_else(unknown)?;
                    let s = s.trim().parse().map_err(|_| unknown())?;
                    let b = b.trim().parse().map_err(|_| unknown())?;
                    Ok((s, b))
                })
                .collect::<Result<_, _>>()
                .map(PlanSpec::Boundaries);
        }
        if name.eq_ignore_ascii_case("1a") {
            return Ok(PlanSpec::OneA);
        }
        match name.parse::<usize>().map_err(|_| unknown())? {
            0 => Err(PlanError::NotPositive("--plan K")),
            1 => Ok(PlanSpec::EndToEnd),
            k => Ok(PlanSpec::Modules(k)),
        }
    }
}

impl fmt::Display for PlanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanSpec::EndToEnd => f.write_str("1"),
            PlanSpec::OneA => f.write_str("1A"),
            PlanSpec::Modules(k) => write!(f, "{k}"),
            PlanSpec::Boundaries(b) => {
                let pairs: Vec<String> = b.iter().map(|(s, k)| format!("{s}:{k}")).collect();
                f.write_str(&pairs.join(","))
            }
        }
    }
}

impl Serialize for PlanSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlanSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_once_and_print_back() {
        for (text, spec) in [
            ("1", PlanSpec::EndToEnd),
            ("1A", PlanSpec::OneA),
            ("4", PlanSpec::Modules(4)),
            (
                "1:2,2:1,3:0,3:4",
                PlanSpec::Boundaries(vec![(1, 2), (2, 1), (3, 0), (3, 4)]),
            ),
        ] {
            assert_eq!(text.parse::<PlanSpec>(), Ok(spec.clone()));
            assert_eq!(spec.to_string(), text);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<PlanSpec>(&json).unwrap(), spec);
        }
        assert_eq!("1a".parse::<PlanSpec>(), Ok(PlanSpec::OneA));
        assert_eq!(
            "0".parse::<PlanSpec>(),
            Err(PlanError::NotPositive("--plan K"))
        );
        for bad in ["", "x", "1:", "1:2,", "-3", "1A2"] {
            assert!(
                matches!(bad.parse::<PlanSpec>(), Err(PlanError::UnknownPlan(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn methods_name_every_kind_of_plan() {
        assert_eq!(PlanSpec::EndToEnd.method(1), "e2e");
        assert_eq!(PlanSpec::EndToEnd.method(2), "GN-DGL G=2 K=1");
        assert_eq!(PlanSpec::OneA.method(4), "1A G=4");
        assert_eq!(PlanSpec::Modules(4).method(1), "DGL K=4");
        assert_eq!(PlanSpec::Modules(4).method(2), "GN-DGL G=2 K=4");
        let b = PlanSpec::Boundaries(vec![(1, 2), (3, 4)]);
        assert_eq!(b.method(1), "DGL K=2 (1:2,3:4)");
    }
}
