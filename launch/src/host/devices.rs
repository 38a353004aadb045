//! Host facilities Veil's devices use: io_uring, `/dev/net/tun` and the vhost devices.

use std::os::fd::{FromRawFd, OwnedFd};

use serde::Serialize;

use super::Feature;
use super::sysfs::open_test;

/// io_uring availability and the feature bits the kernel reported.
#[derive(Debug, Clone, Serialize)]
pub struct IoUringFacts {
    /// Whether `io_uring_setup` succeeded.
    #[serde(flatten)]
    pub support: Feature,
    /// `io_uring_params.features` (the `IORING_FEAT_*` bits), when available.
    pub features: Option<u32>,
}

/// io_uring, tap and vhost on this host.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceFacts {
    /// `io_uring_setup(2)` with one entry.
    pub io_uring: IoUringFacts,
    /// Opening `/dev/net/tun` (tap devices for virtio-net).
    pub tun: Feature,
    /// Opening `/dev/vhost-net` (in-kernel virtio-net data path).
    pub vhost_net: Feature,
    /// Opening `/dev/vhost-vsock` (in-kernel virtio-vsock).
    pub vhost_vsock: Feature,
}

impl DeviceFacts {
    /// Probes each facility by opening it and closing it again.
    pub fn probe() -> Self {
        let vhost = |path: &str, module: &str| {
            let mut f = open_test(path);
            if !f.available && f.detail.ends_with("does not exist") {
                f.detail
                    .push_str(&format!(" (the {module} module is not loaded)"));
            }
            f
        };
        DeviceFacts {
            io_uring: probe_io_uring(),
            tun: open_test("/dev/net/tun"),
            vhost_net: vhost("/dev/vhost-net", "vhost_net"),
            vhost_vsock: vhost("/dev/vhost-vsock", "vhost_vsock"),
        }
    }
}

/// Creates a one-entry io_uring and closes it.
fn probe_io_uring() -> IoUringFacts {
    // struct io_uring_params is 120 bytes: ten u32 fields (features at index 5) and two
    // 40-byte offset structs the kernel fills in. All zero asks for defaults.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes exactly sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which is the size of `params`; it has no other memory effects.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        let why = match err.raw_os_error() {
            Some(libc::ENOSYS) => "kernel built without io_uring (CONFIG_IO_URING)".to_string(),
            Some(libc::EPERM) => format!(
                "io_uring_setup: permission denied (kernel.io_uring_disabled = {}, or a \
                 seccomp filter)",
                std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "unknown".into())
            ),
            _ => format!("io_uring_setup failed: {err}"),
        };
        return IoUringFacts {
            support: Feature::absent(why),
            features: None,
        };
    }
    let fd = i32::try_from(ret).expect("io_uring_setup returns a file descriptor");
    // SAFETY: `fd` was just returned by io_uring_setup and is owned by nothing else; dropping
    // the OwnedFd closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    IoUringFacts {
        support: Feature::present(format!("io_uring_setup works (features {:#x})", params[5])),
        features: Some(params[5]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_probe_agrees_with_the_sysctl() {
        // On a host where io_uring is fully disabled (sysctl 2) the probe must say absent.
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|s| s.trim() == "2")
            .unwrap_or(false);
        let facts = probe_io_uring();
        assert_eq!(
            facts.support.available, !disabled,
            "{}",
            facts.support.detail
        );
        assert_eq!(facts.features.is_some(), facts.support.available);
    }
}
