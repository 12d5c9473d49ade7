#!/usr/bin/env bash
# The project's test command (README): sets up the machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets --locked
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --locked
