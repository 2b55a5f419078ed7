//! [`NodeId`]: the one name of a node, as checkpoints, metrics, logs and fault specs write it.

use std::fmt;
use std::str::FromStr;

/// A node of a plan: group g's column of module k (with its auxiliary classifier when module k ends at
/// a boundary; module k = K is the final module's column, trained through the head), or the head.
///
/// Written `m{k}.g{g}` or `head` (`m1.g0`), everywhere: checkpoint name prefixes (`m1.g0.s2.b1.conv1.weight`),
/// `metrics.jsonl` timings, logs and `--inject-fault m1.g0@5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeId {
    /// Group `group`'s column of module `module`.
    Column {
        /// Module k.
        module: usize,
        /// Group g.
        group: usize,
    },
    /// The final classifier.
    Head,
}

impl NodeId {
    /// Group g's column of module k.
    pub fn column(module: usize, group: usize) -> Self {
        NodeId::Column { module, group }
    }

    /// The prefix of this node's tensor names in checkpoints: `m{k}.g{g}.` or `head.`.
    pub fn prefix(&self) -> String {
        format!("{self}.")
    }
}

/// As its name (`"m1.g0"`, `"head"`).
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::Column { module, group } => write!(f, "m{module}.g{group}"),
            NodeId::Head => f.write_str("head"),
        }
    }
}

impl FromStr for NodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "head" {
            return Ok(NodeId::Head);
        }
        let bad = || format!("'{s}' is not a node name: expected m<k>.g<g> (e.g. m1.g0) or head");
        let (m, g) = s
            .strip_prefix('m')
            .and_then(|r| r.split_once(".g"))
            .ok_or_else(bad)?;
        Ok(NodeId::Column {
            module: m.parse().map_err(|_| bad())?,
            group: g.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for id in [NodeId::column(0, 0), NodeId::column(12, 3), NodeId::Head] {
            assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }
        assert_eq!(NodeId::column(1, 2).prefix(), "m1.g2.");
        for bad in ["", "m1", "m1.g", "mx.g0", "g0", "heads", "m1.g0.s2"] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad}");
        }
    }
}
