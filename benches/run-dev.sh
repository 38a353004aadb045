#!/usr/bin/env bash
# Device benchmark: Veil vs QEMU driving the same virtio-blk-pci disk from the probe guest.
# Installs QEMU (Debian package qemu-system-x86) if it is missing, builds `veil` and the
# benchmark in release mode, and runs benches/src/bin/dev_bench.rs. Arguments go to dev_bench,
# e.g. `benches/run-dev.sh --rounds 9` or `benches/run-dev.sh --only randread_4k_qd32`.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
need_qemu run-dev.sh

cargo build --release -p veil-vmm --bin veil
cargo run --release -p veil-benches --bin dev_bench -- "$@"
