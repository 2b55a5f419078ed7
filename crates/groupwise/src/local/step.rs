//! One training step of a module's units and of the head, written once for the sequential oracle
//! ([`Network::train_step`](super::Network::train_step)) and the parallel workers
//! (`parallel::worker`): they differ only in how the slices and logits of a module reach its other
//! groups, which is the [`Exchange`] (METHOD.md sections 4 and 9).

use tch::Tensor;

use super::unit::{Head, TailColumn, Unit, UnitStats};

/// Per-batch statistics of a training step.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// `units[k][g]`.
    pub units: Vec<Vec<UnitStats>>,
    /// Head cross-entropy.
    pub head_loss: f64,
    /// Head correct predictions.
    pub head_correct: i64,
    /// Batch size.
    pub batch: i64,
}

impl StepStats {
    /// `L_k = sum_g CE + lambda * L_div` of boundary k.
    pub fn module_loss(&self, k: usize, lambda: f64) -> f64 {
        let u = &self.units[k];
        u.iter().map(|s| s.cross_entropy).sum::<f64>() + lambda * u[0].diversity
    }
}

/// The parts of a node's step, in order; [`Exchange::mark`] and [`head_step`]'s `mark` are told when
/// each ends, so a caller can time them without the step knowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The trunk's forward pass (a unit's column, or the head's final columns).
    Trunk,
    /// The classifier's forward pass (auxiliary or head).
    Classifier,
    /// The loss and its backward pass.
    Backward,
    /// The optimizer's update.
    Update,
}

impl Phase {
    /// Every phase, in order (`Phase::ALL[p as usize] == p`).
    pub const ALL: [Phase; 4] = [
        Phase::Trunk,
        Phase::Classifier,
        Phase::Backward,
        Phase::Update,
    ];

    /// Its name in words (charts, trace files).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Trunk => "trunk",
            Phase::Classifier => "classifier",
            Phase::Backward => "loss + backward",
            Phase::Update => "update",
        }
    }
}

/// How the units of one module held here meet the module's other groups during a step.
///
/// A worker holding some groups of module k hands their detached slices and logits to the groups
/// (and the next module) that read them, and receives the others'; the sequential path holds every
/// group, so its exchange is the identity ([`AllHere`]). Tensors arrive in group order; what the
/// caller receives is used as a constant (stop-gradient, METHOD.md section 4).
pub trait Exchange {
    /// Why an exchange failed (the job is being torn down).
    type Error;
    /// `own`: `(group, detached slice)` of the units held here, in group order. Hands them to whoever
    /// reads them (auxiliary classifiers of other groups, the next module) and returns every group's
    /// slice in group order, as the auxiliary inputs of the units held here read them (an undefined
    /// tensor where none of them reads a group).
    fn slices(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Self::Error>;
    /// `own`: `(group, detached logits)` of the units held here; returns every group's logits in group
    /// order (the diversity term's peers).
    fn logits(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Self::Error>;
    /// Group `group`'s unit has just ended `phase` (no transport in between): a hook for timing.
    fn mark(&mut self, _group: usize, _phase: Phase) {}
}

/// Every group of the module is held here (the sequential path): what is handed over is what comes
/// back.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllHere;

impl Exchange for AllHere {
    type Error = std::convert::Infallible;

    fn slices(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Self::Error> {
        Ok(own.iter().map(|(_, t)| t.shallow_clone()).collect())
    }

    fn logits(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Self::Error> {
        Ok(own.iter().map(|(_, t)| t.shallow_clone()).collect())
    }
}

/// One training step of `units` (groups of one module held here, in group order) on the module's
/// input `[B, C_in, H, W]`: each group's slice, the exchange of detached slices, the auxiliary
/// classifiers' logits, the exchange of detached logits, then every unit's [`Unit::backward`] and [`Unit::update`]. `exchange.mark` is told when
/// each unit ends each [`Phase`].
/// `images` is the network input (read only by InfoPro's decoders). Returns each unit's statistics and
/// its detached slice (the next module's input), in the order of `units`.
pub fn step_units<X: Exchange>(
    units: &mut [Unit],
    input: &Tensor,
    labels: &Tensor,
    images: &Tensor,
    lr: f64,
    exchange: &mut X,
) -> Result<(Vec<UnitStats>, Vec<Tensor>), X::Error> {
    // Each slice keeps its graph for its own unit; the others see it detached.
    let mut own = Vec::with_capacity(units.len());
    for u in units.iter() {
        own.push(u.forward_trunk(input, true));
        exchange.mark(u.group, Phase::Trunk);
    }
    let detached: Vec<(usize, Tensor)> = units
        .iter()
        .zip(&own)
        .map(|(u, o)| (u.group, o.detach()))
        .collect();
    let slices = exchange.slices(&detached)?;
    let mut aux_inputs = Vec::with_capacity(units.len());
    let mut logits = Vec::with_capacity(units.len());
    for (u, o) in units.iter().zip(&own) {
        let x = u.aux_input(o, &slices);
        logits.push(u.forward_aux(&x, o, true));
        aux_inputs.push(x);
        exchange.mark(u.group, Phase::Classifier);
    }
    let own_logits: Vec<(usize, Tensor)> = units
        .iter()
        .zip(&logits)
        .map(|(u, z)| (u.group, z.detach()))
        .collect();
    let peers = exchange.logits(&own_logits)?;
    let mut stats = Vec::with_capacity(units.len());
    for (u, (x, z)) in units.iter_mut().zip(aux_inputs.iter().zip(&logits)) {
        stats.push(u.backward(x, z, &peers, labels, images));
        exchange.mark(u.group, Phase::Backward);
        u.update(lr);
        exchange.mark(u.group, Phase::Update);
    }
    Ok((stats, detached.into_iter().map(|(_, t)| t).collect()))
}

/// The head's step: the final module's columns held here (none, or all of them) over `input`, the
/// head's cross-entropy and its backward pass into the head, those columns and whatever `input` was
/// computed from, then one update of each. `mark` is told when each [`Phase`] ends. Returns (loss,
/// correct predictions).
pub fn head_step(
    head: &mut Head,
    tail: &mut [TailColumn],
    input: &Tensor,
    labels: &Tensor,
    lr: f64,
    mark: &mut dyn FnMut(Phase),
) -> (f64, i64) {
    let features = tail_forward(tail, input, true);
    mark(Phase::Trunk);
    let z = head.forward(&features, true);
    mark(Phase::Classifier);
    let out = head.loss_backward(&z, labels);
    mark(Phase::Backward);
    for column in tail.iter_mut() {
        column.step(lr);
    }
    head.step(lr);
    mark(Phase::Update);
    out
}

/// The head's input: the final module's columns over the last boundary output, concatenated (the
/// boundary output itself when there are none).
pub(super) fn tail_forward(tail: &[TailColumn], input: &Tensor, train: bool) -> Tensor {
    if tail.is_empty() {
        return input.shallow_clone();
    }
    let columns: Vec<Tensor> = tail.iter().map(|t| t.forward(input, train)).collect();
    cat_channels(&columns)
}

/// Concatenates group slices along channels (no copy for a single slice).
pub fn cat_channels(parts: &[Tensor]) -> Tensor {
    if parts.len() == 1 {
        parts[0].shallow_clone()
    } else {
        Tensor::cat(parts, 1)
    }
}
