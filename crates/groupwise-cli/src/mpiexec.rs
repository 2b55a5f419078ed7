//! Launching the built binary under `mpiexec`, for `bench --parallel` and the MPI tests: where
//! `mpiexec` is, and the OpenMPI settings a container needs.

use std::path::PathBuf;

/// OpenMPI settings for containers: allow root, oversubscribe the cores, no CMA single-copy
/// transfers (blocked by ptrace rules in many containers).
pub const CONTAINER_ENV: [(&str, &str); 4] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ("OMPI_MCA_rmaps_base_oversubscribe", "1"),
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
];

/// The first `mpiexec` on PATH.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("mpiexec"))
        .find(|p| p.is_file())
}
