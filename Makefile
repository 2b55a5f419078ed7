# The two quick-start commands are `make train` and `make check`; everything they need is installed here.
.PHONY: setup data mpi fonts train check check-features bench sweep

setup:
	./scripts/setup-libtorch.sh

# OpenMPI and libclang for `--features mpi` (the MPI transport and its tests).
mpi:
	./scripts/setup-mpi.sh || echo "note: OpenMPI could not be installed; MPI tests will be skipped"

# The mpi feature when an MPI library is installed, so `make check` also runs the MPI tests.
FEATURES := $(shell command -v mpicc >/dev/null 2>&1 && echo --features groupwise-cli/mpi)

data:
	./scripts/setup-data.sh

# DejaVu Sans for the plots of `groupwise report` (and its test).
fonts:
	./scripts/setup-fonts.sh

# The README's main job: GN-DGL (K=4, G=2) on Fashion-MNIST, a few minutes on 2 cores.
train: setup data
	cargo run --release -p groupwise-cli -- train

# The test command: formatting, lints (with and without MPI), docs without warnings, every test (MPI
# ones under mpiexec).
check: setup mpi fonts
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory check-features

# With the mpi feature, GROUPWISE_EXPECT_MPI=1 makes a skipped MPI test (no mpiexec) a failure.
check-features:
	@if [ -n "$(FEATURES)" ]; then cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings; fi
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace $(FEATURES)
	GROUPWISE_EXPECT_MPI=$(if $(FEATURES),1,) cargo test --workspace $(FEATURES)

# The README's results: e2e, DGL K=4, GN-DGL G=2/G=4 K=4 on Fashion-MNIST, short budget (~15 min).
sweep: setup data fonts
	cargo run --release -p groupwise-cli -- sweep --file sweeps/fashion-mnist-short.toml

bench: setup
	cargo run --release -p groupwise-cli -- bench
