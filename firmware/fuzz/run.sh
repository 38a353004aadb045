#!/usr/bin/env bash
# Long fuzzing runs of Veil's firmware parsers with cargo-fuzz (needs a nightly toolchain and
# `cargo install cargo-fuzz`). Usage: firmware/fuzz/run.sh [seconds per target, default 600].
# Seeds: Debian's OVMF.fd and an IGVM file built from it by `veil igvm build`.
# Without nightly, the stable smoke loop runs longer instead:
#   VEIL_FUZZ_ITERS=1000000 cargo test --release -p veil-firmware --test fuzz_smoke
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
mkdir -p corpus/ovmf corpus/igvm
if [ -f /usr/share/ovmf/OVMF.fd ]; then
  cp /usr/share/ovmf/OVMF.fd corpus/ovmf/debian-OVMF.fd
  (cd ../.. && cargo build -q --bin veil &&
    "${CARGO_TARGET_DIR:-target}/debug/veil" igvm build --firmware /usr/share/ovmf/OVMF.fd \
      --platform sev-snp,tdx --cpu-type EPYC -o firmware/fuzz/corpus/igvm/ovmf.igvm)
fi
mkdir -p corpus/kernel
for target in ovmf igvm kernel; do
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4194304
done
