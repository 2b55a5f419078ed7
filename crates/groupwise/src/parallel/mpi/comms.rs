//! The MPI handles a rank keeps for the whole run (communicators) and the wire format of a message:
//! one tensor as safetensors bytes, the checkpoint format ([`checkpoint::to_bytes`]).

use std::collections::BTreeMap;

use mpi::topology::SimpleCommunicator;
use tch::Tensor;

use crate::checkpoint;

/// Handles that only one thread uses at a time: the main thread between segments, the progress
/// thread during one (`MPI_THREAD_SERIALIZED`).
pub(super) struct Comms {
    pub(super) world: SimpleCommunicator,
    pub(super) data: SimpleCommunicator,
}

/// Module k's communicator and the world rank of each of its ranks, when this rank hosts one of its
/// groups.
pub(super) struct ModuleComms(pub(super) Vec<Option<(SimpleCommunicator, Vec<usize>)>>);

// SAFETY: as for `Comms` below: MPI handles used by one thread at a time (MPI_THREAD_SERIALIZED).
unsafe impl Send for ModuleComms {}
// SAFETY: as above.
unsafe impl Sync for ModuleComms {}

// SAFETY: MPI handles are plain identifiers. MPI is initialised with MPI_THREAD_SERIALIZED and the
// runtime guarantees that at most one thread calls MPI at any time (see the module docs), which is what
// that level requires; the handles are never used concurrently.
unsafe impl Send for Comms {}
// SAFETY: as above; shared references are only used by the one thread that currently owns MPI.
unsafe impl Sync for Comms {}

/// The name of the one tensor of a message.
const WIRE_NAME: &str = "t";

/// A message on the wire: one tensor as safetensors bytes.
pub(super) fn encode_tensor(t: &Tensor) -> Result<Vec<u8>, String> {
    checkpoint::to_bytes(&[(WIRE_NAME.to_string(), t.shallow_clone())])
}

/// The tensor of a message.
pub(super) fn decode_tensor(bytes: &[u8]) -> Result<Tensor, String> {
    let mut named: BTreeMap<String, Tensor> = checkpoint::from_bytes(bytes)?;
    named
        .remove(WIRE_NAME)
        .ok_or_else(|| "corrupt message: no tensor".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn wire_format_round_trips() {
        let t = Tensor::randn([2, 3, 4], (Kind::Float, Device::Cpu));
        let back = decode_tensor(&encode_tensor(&t).unwrap()).unwrap();
        assert!(t.equal(&back));
        assert!(decode_tensor(&[0, 1, 2]).is_err());
    }
}
