#!/usr/bin/env bash
# Boot benchmark: Veil, QEMU microvm and the KVM floor booting the same guest, side by side.
# Installs QEMU (Debian package qemu-system-x86) if it is missing, builds `veil` and the
# benchmark in release mode, and runs benches/src/bin/boot_bench.rs. Arguments go to boot_bench,
# e.g. `benches/run-boot.sh --runs 20` or `benches/run-boot.sh --guest tiny`.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
need_qemu run-boot.sh

# Veil is measured as it is deployed: statically linked and not position-independent (the
# jailer copies only the binary into the jail, so a jailed veil must be static). --target keeps
# these flags off build scripts and proc macros. A dynamically linked PIE veil maps libc.so and
# ld.so and relocates itself at start: about 1.2 MiB more peak RSS.
triple=x86_64-unknown-linux-gnu
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build --release -p veil-vmm --bin veil --target "$triple"
veil="${CARGO_TARGET_DIR:-target}/$triple/release/veil"
cargo build --release -p veil-benches --bins
cargo run --release -p veil-benches --bin boot_bench -- --veil "$veil" "$@"
