//! The time stamp counter: reads, its frequency (when CPUID tells) and fixed-point output.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::fmt;

/// Reads the TSC.
pub fn now() -> u64 {
    // SAFETY: RDTSC is unprivileged unless CR4.TSD is set, which the probe never sets.
    unsafe { _rdtsc() }
}

/// The TSC frequency in Hz if CPUID reports it: leaf 0x15 (crystal ratio), the hypervisor leaf
/// 0x40000010 (kHz), or leaf 0x16 (base MHz, an approximation).
pub fn hz() -> Option<u64> {
    let max = __cpuid(0).eax;
    if max >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax));
        }
    }
    let hv_max = __cpuid(0x4000_0000).eax;
    if (0x4000_0010..0x4001_0000).contains(&hv_max) {
        let khz = __cpuid(0x4000_0010).eax;
        if khz != 0 {
            return Some(u64::from(khz) * 1000);
        }
    }
    if max >= 0x16 {
        let mhz = __cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    None
}

/// Busy-waits about `us` microseconds (assuming 3 GHz when the TSC frequency is unknown).
pub fn delay_us(hz: Option<u64>, us: u64) {
    let cycles = hz.unwrap_or(3_000_000_000) / 1_000_000 * us;
    let start = now();
    while now().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// A ratio printed with three decimals.
pub struct Ratio(pub u64, pub u64);

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 == 0 {
            return write!(f, "nan");
        }
        let milli = (u128::from(self.0) * 1000 / u128::from(self.1)) as u64;
        write!(f, "{}.{:03}", milli / 1000, milli % 1000)
    }
}
