# The two quick-start commands are `make train` and `make check`; everything they need is installed here.
.PHONY: setup data train check bench

setup:
	./scripts/setup-libtorch.sh

data:
	./scripts/setup-data.sh

# The README's main job: GN-DGL (K=4, G=2) on Fashion-MNIST, a few minutes on 2 cores.
train: setup data
	cargo run --release -p groupwise-cli -- train

# The test command: formatting, lints, every test.
check: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

bench: setup
	cargo run --release -p groupwise-cli -- bench
