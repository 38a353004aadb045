//! Tests of the launch drivers against the platform models: digest agreement with
//! `veil_firmware::measure`, the rules the models enforce, and run-time conversions.

mod id_block;
mod igvm;
mod snp;
mod snp_rules;
mod tdx;
mod tdx_rules;

use std::path::PathBuf;

use veil_firmware::{LaunchPlan, Payload, Platform, VmConfig, build_plan, cpu_types};

pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The plan of Debian's OVMF for `platform` with `cpus` vCPUs, or None (with a printed reason)
/// when OVMF is not installed.
pub fn ovmf_plan(platform: Platform, cpus: u32, sev_features: u64) -> Option<LaunchPlan> {
    if !std::path::Path::new(OVMF).is_file() {
        eprintln!("skipped: {OVMF} is not installed (apt-get install ovmf)");
        return None;
    }
    let config = VmConfig {
        platform,
        cpus,
        memory: 512 << 20,
        cpu_signature: cpu_types::signature_of("EPYC-Milan").expect("a known CPU model"),
        sev_features,
        policy: None,
        host_data: [0; 32],
        cmdline: None,
    };
    let payload = Payload::Firmware {
        path: PathBuf::from(OVMF),
        kernel: None,
    };
    Some(build_plan(&payload, &config).expect("Debian's OVMF makes a plan"))
}
