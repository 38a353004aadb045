# Shared by the benches/run-*.sh scripts (sourced from the repository root, not run).

# Installs QEMU (Debian package qemu-system-x86) if qemu-system-x86_64 is missing; $1 names the
# calling script in the message.
need_qemu() {
    if ! command -v qemu-system-x86_64 >/dev/null; then
        echo "$1: installing qemu-system-x86" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends qemu-system-x86
    fi
}
