//! The K x G partition (METHOD.md sections 2 to 4) as validated, typed data.
//!
//! A [`Plan`] is an architecture, a list of boundaries (positions after which a module ends and an
//! auxiliary classifier sits), a group count `G` and how auxiliary classifiers read their input. It is
//! validated once, by [`Plan::new`]; everything downstream (units, cost, checkpoints) trusts it.

pub mod cost;
mod node;
mod spec;

pub use node::NodeId;
pub use spec::PlanSpec;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Arch;

/// What an auxiliary classifier `aux[k][g]` reads (METHOD.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "ratio")]
pub enum AuxInput {
    /// All `C` channels of the boundary output; only group g's slice carries gradient (the paper's
    /// main setting, `--detach --detach-ratio 1.0` in the reference).
    StopGradient,
    /// Group g's own `C/G` channels only (the reference's single-thread runs).
    Isolated,
    /// Own slice plus, from every other group h, the first `floor(r*C/G)` channels of h's slice
    /// (detached), concatenated in group order. The reference picks a shifted window for groups after
    /// the first; we always take the *leading* channels of each other group's slice.
    Partial(f64),
}

impl AuxInput {
    /// The name `--aux-input` takes and reports print (`partial(r)` with its ratio).
    pub fn name(&self) -> String {
        match self {
            AuxInput::StopGradient => "stop-gradient".into(),
            AuxInput::Isolated => "isolated".into(),
            AuxInput::Partial(r) => format!("partial({r})"),
        }
    }
}

/// Why a plan is rejected. Every message names the offending flag or value.
#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    /// `--groups` does not divide a width.
    #[error("--groups {groups} does not divide width {width} (widths {widths:?}); choose G dividing every width")]
    GroupsDoNotDivide {
        /// G.
        groups: i64,
        /// The first width it does not divide.
        width: i64,
        /// All widths.
        widths: [i64; 4],
    },
    /// G = 0 or a width of 0.
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
    /// A plan name that is neither a known K nor a boundary list.
    #[error(
        "unknown --plan '{0}': use 1, 1A, a number of modules K, or boundaries like '1:2,2:1,3:4'"
    )]
    UnknownPlan(String),
    /// A boundary outside the network.
    #[error("boundary ({stage},{block}) is outside ResNet-{depth} (stages 1..3 have blocks 0..{last}; (0,0) is the stem)")]
    BoundaryOutOfRange {
        /// Stage.
        stage: usize,
        /// Block.
        block: usize,
        /// Network depth.
        depth: usize,
        /// Last block index in a stage.
        last: usize,
    },
    /// Boundaries not strictly increasing.
    #[error("boundaries must be strictly increasing and distinct; got {0}")]
    NotIncreasing(String),
    /// More modules than positions.
    #[error("--plan {k}: ResNet-{depth} has only {positions} positions (stem + blocks) to cut")]
    TooManyModules {
        /// Requested K.
        k: usize,
        /// Depth.
        depth: usize,
        /// Positions available.
        positions: usize,
    },
    /// A partial ratio outside (0, 1) or one that gives zero channels.
    #[error("--aux-ratio {ratio} must lie in (0, 1) and give at least one channel of a {width}/{groups} slice")]
    BadRatio {
        /// Ratio.
        ratio: f64,
        /// Width at a boundary.
        width: i64,
        /// G.
        groups: i64,
    },
    /// Inconsistent architecture fields.
    #[error("invalid architecture: {0}")]
    BadArch(String),
}

/// The ResNet-32 plans of METHOD.md section 2 for K modules, as `(stage, block)` boundaries.
fn resnet32_table(k: usize) -> Option<Vec<(usize, usize)>> {
    Some(match k {
        2 => vec![(2, 1), (3, 4)],
        3 => vec![(1, 4), (2, 4), (3, 4)],
        4 => vec![(1, 2), (2, 1), (3, 0), (3, 4)],
        8 => vec![
            (1, 0),
            (1, 2),
            (1, 4),
            (2, 1),
            (2, 3),
            (3, 0),
            (3, 2),
            (3, 4),
        ],
        16 => {
            let mut v = vec![(0, 0)];
            v.extend((1..=3).flat_map(|s| (0..5).map(move |b| (s, b))));
            v
        }
        _ => return None,
    })
}

/// A validated partition of the network into K modules x G groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The network.
    pub arch: Arch,
    /// Positions (see [`Arch::position`]) after which a module ends, strictly increasing.
    pub boundaries: Vec<usize>,
    /// Number of neuron groups G.
    pub groups: i64,
    /// How auxiliary classifiers read the boundary output.
    pub aux_input: AuxInput,
    /// Hidden width of InfoPro's decoder beside every auxiliary classifier (none without InfoPro);
    /// counted in the units' cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_width: Option<i64>,
}

impl Plan {
    /// Builds and validates a plan. `name` is `1`, `1A`, a module count `K`, or an explicit list of
    /// `stage:block` boundaries separated by commas.
    ///
    /// For ResNet-32 the named K come from the paper's table; for other depths (and K not in the
    /// table) the boundaries follow the cost-balancing rule of [`balanced_boundaries`].
    pub fn new(
        arch: Arch,
        name: &str,
        groups: i64,
        aux_input: AuxInput,
    ) -> Result<Plan, PlanError> {
        Plan::from_spec(arch, &name.parse()?, groups, aux_input)
    }

    /// [`Plan::new`] for a parsed [`PlanSpec`].
    pub fn from_spec(
        arch: Arch,
        spec: &PlanSpec,
        groups: i64,
        aux_input: AuxInput,
    ) -> Result<Plan, PlanError> {
        validate_arch(&arch)?;
        let boundaries = resolve_boundaries(&arch, spec)?;
        Plan::from_boundaries(arch, boundaries, groups, aux_input)
    }

    /// The same plan with InfoPro decoders of hidden width `width` (or none) beside the auxiliary
    /// classifiers.
    pub fn with_decoder(mut self, width: Option<i64>) -> Plan {
        self.decoder_width = width;
        self
    }

    /// Builds and validates a plan from explicit boundary positions.
    pub fn from_boundaries(
        arch: Arch,
        boundaries: Vec<usize>,
        groups: i64,
        aux_input: AuxInput,
    ) -> Result<Plan, PlanError> {
        validate_arch(&arch)?;
        if groups < 1 {
            return Err(PlanError::NotPositive("--groups"));
        }
        if let Some(&width) = arch.widths.iter().find(|&&w| w % groups != 0) {
            return Err(PlanError::GroupsDoNotDivide {
                groups,
                width,
                widths: arch.widths,
            });
        }
        if boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PlanError::NotIncreasing(format!("{boundaries:?}")));
        }
        if let Some(&p) = boundaries.iter().find(|&&p| p >= arch.positions()) {
            let (stage, block) = arch.stage_block(p);
            return Err(PlanError::BoundaryOutOfRange {
                stage,
                block,
                depth: arch.depth(),
                last: arch.blocks_per_stage - 1,
            });
        }
        let plan = Plan {
            arch,
            boundaries,
            groups,
            aux_input,
            decoder_width: None,
        };
        if let AuxInput::Partial(ratio) = aux_input {
            for k in 0..plan.boundaries.len() {
                let width = plan.boundary_channels(k);
                let window = (ratio * (width / groups) as f64).floor() as i64;
                if !(ratio > 0.0 && ratio < 1.0) || (groups > 1 && window < 1) {
                    return Err(PlanError::BadRatio {
                        ratio,
                        width,
                        groups,
                    });
                }
            }
        }
        Ok(plan)
    }

    /// Number of modules with auxiliary classifiers (the paper's K, 1A counting as 1).
    pub fn boundary_count(&self) -> usize {
        self.boundaries.len()
    }

    /// Positions of module `k` (0-based); module `boundary_count()` is the final module, which may be
    /// empty when the last boundary ends the backbone.
    pub fn module_positions(&self, k: usize) -> std::ops::RangeInclusive<usize> {
        let start = if k == 0 {
            0
        } else {
            self.boundaries[k - 1] + 1
        };
        let end = if k < self.boundaries.len() {
            self.boundaries[k]
        } else {
            self.arch.positions() - 1
        };
        // An empty final module is start > end, which RangeInclusive represents as empty.
        start..=end
    }

    /// Channel count of the output at boundary `k`.
    pub fn boundary_channels(&self, k: usize) -> i64 {
        self.arch.layers()[self.boundaries[k]].out_channels
    }

    /// Spatial size of the output at boundary `k`.
    pub fn boundary_size(&self, k: usize) -> i64 {
        self.arch.layers()[self.boundaries[k]].out_size
    }

    /// Input channels and hidden width of `aux[k][g]` (the same for every g).
    pub fn aux_shape(&self, k: usize) -> (i64, i64) {
        let c = self.boundary_channels(k);
        let g = self.groups;
        let f = self.arch.hidden_features();
        match self.aux_input {
            AuxInput::StopGradient => (c, f),
            AuxInput::Isolated => (c / g, f / g),
            AuxInput::Partial(r) => {
                let window = (r * (c / g) as f64).floor() as i64;
                let extra = (r * ((g - 1) * f / g) as f64).floor() as i64;
                (c / g + (g - 1) * window, f / g + extra)
            }
        }
    }

    /// The channels of boundary `k`'s output that `aux[k][g]` reads, as `(group, start, len)` windows
    /// into the groups' slices, in concatenation order.
    pub fn aux_windows(&self, k: usize, g: i64) -> Vec<(i64, i64, i64)> {
        let slice = self.boundary_channels(k) / self.groups;
        match self.aux_input {
            AuxInput::StopGradient => (0..self.groups).map(|h| (h, 0, slice)).collect(),
            AuxInput::Isolated => vec![(g, 0, slice)],
            AuxInput::Partial(r) => {
                let window = (r * slice as f64).floor() as i64;
                (0..self.groups)
                    .map(|h| (h, 0, if h == g { slice } else { window }))
                    .collect()
            }
        }
    }

    /// Boundaries as `(stage, block)` pairs.
    pub fn boundary_names(&self) -> Vec<(usize, usize)> {
        self.boundaries
            .iter()
            .map(|&p| self.arch.stage_block(p))
            .collect()
    }
}

fn validate_arch(arch: &Arch) -> Result<(), PlanError> {
    if arch.blocks_per_stage == 0 {
        return Err(PlanError::NotPositive("blocks per stage (depth 6n+2)"));
    }
    if arch.widths.iter().any(|&w| w < 1) {
        return Err(PlanError::NotPositive("every width"));
    }
    if arch.in_channels < 1 || arch.classes < 2 {
        return Err(PlanError::BadArch(format!(
            "{} input channels and {} classes (need >= 1 and >= 2)",
            arch.in_channels, arch.classes
        )));
    }
    if arch.image_size < 8 {
        return Err(PlanError::BadArch(format!(
            "images of {0}x{0} are too small for three stages and a stride-2 head (need >= 8)",
            arch.image_size
        )));
    }
    Ok(())
}

fn resolve_boundaries(arch: &Arch, spec: &PlanSpec) -> Result<Vec<usize>, PlanError> {
    let k = match spec {
        PlanSpec::EndToEnd => return Ok(vec![]),
        PlanSpec::OneA => return Ok(vec![arch.positions() - 1]),
        PlanSpec::Boundaries(pairs) => {
            return pairs
                .iter()
                .map(|&(s, b)| {
                    arch.position(s, b).ok_or(PlanError::BoundaryOutOfRange {
                        stage: s,
                        block: b,
                        depth: arch.depth(),
                        last: arch.blocks_per_stage - 1,
                    })
                })
                .collect();
        }
        PlanSpec::Modules(k) => *k,
    };
    if arch.blocks_per_stage == 5 {
        if let Some(table) = resnet32_table(k) {
            return table
                .into_iter()
                .map(|(s, b)| {
                    arch.position(s, b).ok_or_else(|| {
                        PlanError::BadArch("the paper's table is for ResNet-32".into())
                    })
                })
                .collect();
        }
    }
    if k > arch.positions() {
        return Err(PlanError::TooManyModules {
            k,
            depth: arch.depth(),
            positions: arch.positions(),
        });
    }
    let costs: Vec<f64> = arch
        .layers()
        .iter()
        .map(|l| cost::layer_macs(l, 1, true) as f64)
        .collect();
    Ok(balanced_boundaries(&costs, k))
}

/// The cost-balancing rule for depths and K outside the paper's table.
///
/// Cuts the positions (stem, then every block) into `k` contiguous modules, the last one ending the
/// backbone, so that the largest module's forward MACs (G = 1, auxiliary classifiers left out) is as
/// small as possible. Among the optimal cuts it takes the one found by filling modules from the back,
/// each as long as the optimum allows, which reproduces the paper's ResNet-32 table for K = 3, 8, 16
/// and gives the same shape (the lighter module first, where the stem sits) for other depths.
pub fn balanced_boundaries(costs: &[f64], k: usize) -> Vec<usize> {
    let n = costs.len();
    assert!(k >= 1 && k <= n, "balanced_boundaries: 1 <= k <= positions");
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(costs.iter().scan(0.0, |s, c| {
            *s += c;
            Some(*s)
        }))
        .collect();
    let sum = |a: usize, b: usize| prefix[b] - prefix[a]; // positions a..b (exclusive end)
                                                          // best[j][i]: smallest max-module cost splitting the first i positions into j modules.
    let mut best = vec![vec![f64::INFINITY; n + 1]; k + 1];
    best[0][0] = 0.0;
    for j in 1..=k {
        for i in j..=n {
            for m in (j - 1)..i {
                let v = best[j - 1][m].max(sum(m, i));
                if v < best[j][i] {
                    best[j][i] = v;
                }
            }
        }
    }
    let limit = best[k][n] * (1.0 + 1e-12);
    // Fill from the back: each module takes as many positions as fit, leaving one per remaining module.
    let mut ends = Vec::with_capacity(k);
    let mut end = n;
    for remaining in (1..=k).rev() {
        ends.push(end - 1);
        let mut start = end - 1;
        while start > remaining - 1 && sum(start - 1, end) <= limit {
            start -= 1;
        }
        end = start;
    }
    ends.reverse();
    ends
}
