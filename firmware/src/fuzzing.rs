//! Entry points shared by the cargo-fuzz targets (`firmware/fuzz`) and the stable smoke test:
//! each runs a parser, and the planning and measurement behind it, on untrusted bytes. They
//! must return (with or without an error) for every input, never panic.

use std::path::Path;
use std::sync::Arc;

use crate::measure;
use crate::ovmf::Ovmf;
use crate::payload::{VmConfig, ovmf_plan};
use crate::plan::Platform;

/// Plans larger than this are parsed but not measured, to keep fuzzing fast.
const MEASURE_LIMIT: u64 = 256 << 10;

fn config(platform: Platform) -> VmConfig {
    VmConfig {
        platform,
        cpus: 2,
        memory: 256 << 20,
        cpu_signature: 0x00a0_0f11,
        sev_features: 1,
        policy: None,
        host_data: [0; 32],
        cmdline: Some("console=ttyS0".into()),
    }
}

/// Parses `data` as an OVMF image and plans (and, when small, measures) it for every platform.
pub fn ovmf(data: &[u8]) {
    let Ok(o) = Ovmf::parse(Arc::from(data)) else {
        return;
    };
    for p in [Platform::SevSnp, Platform::Tdx, Platform::None] {
        if let Ok(plan) = ovmf_plan(&o, Path::new("fuzz.fd"), None, &config(p)) {
            if plan.imported_bytes() <= MEASURE_LIMIT {
                let _ = measure::digest(&plan, None);
            }
        }
    }
}

/// Loads `data` as an IGVM file for every platform and measures what loads.
pub fn igvm(data: &[u8]) {
    for p in [Platform::SevSnp, Platform::Tdx, Platform::None] {
        if let Ok(plan) = crate::igvm::load(data, &config(p)) {
            if plan.imported_bytes() <= MEASURE_LIMIT {
                let _ = measure::digest(&plan, None);
            }
        }
    }
}

/// Plans a plain direct boot of `data` as a kernel (bzImage or ELF) and measures the plan.
pub fn kernel(data: &[u8]) {
    let mut plan = crate::plan::LaunchPlan::new(Platform::None);
    let initrd: Arc<[u8]> = Arc::from(&b"initrd"[..]);
    if crate::linux::plan_direct_boot(&mut plan, Arc::from(data), Some(initrd), "quiet", 256 << 20)
        .is_ok()
        && plan.imported_bytes() <= MEASURE_LIMIT
    {
        plan.vcpus.push(crate::plan::VcpuState::reset(
            crate::payload::BSP_RESET_EIP,
            0,
        ));
        let _ = measure::digest(&plan, None);
    }
}
