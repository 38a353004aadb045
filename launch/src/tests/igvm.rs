//! IGVM payloads through the models: the dry-run digest equals `veil measure`'s.

use std::path::PathBuf;

use veil_firmware::measure;
use veil_firmware::{Payload, Platform, VmConfig, build_plan, cpu_types};

use super::ovmf_plan;
use crate::dry_run::{self, DryRunOptions};

fn config(platform: Platform, cpus: u32) -> VmConfig {
    VmConfig {
        platform,
        cpus,
        memory: 512 << 20,
        cpu_signature: cpu_types::signature_of("EPYC-Milan").expect("a known CPU model"),
        sev_features: 1,
        policy: None,
        host_data: [0; 32],
        cmdline: None,
    }
}

/// An IGVM file for SNP and TDX built from Debian's OVMF, in a scratch file.
fn igvm_file() -> Option<PathBuf> {
    let snp = ovmf_plan(Platform::SevSnp, 1, 1)?;
    let tdx = ovmf_plan(Platform::Tdx, 1, 0)?;
    let bytes = veil_firmware::igvm::build(&[snp, tdx]).expect("OVMF converts to IGVM");
    let path = std::env::temp_dir().join(format!("veil-launch-test-{}.igvm", std::process::id()));
    std::fs::write(&path, bytes).expect("the temp directory is writable");
    Some(path)
}

#[test]
fn dry_run_digest_equals_veil_measure_for_igvm_on_both_platforms() {
    let Some(path) = igvm_file() else {
        return;
    };
    for platform in [Platform::SevSnp, Platform::Tdx] {
        for cpus in [1, 2, 4] {
            let plan = build_plan(&Payload::Igvm(path.clone()), &config(platform, cpus))
                .expect("the IGVM file loads");
            let expected = measure::digest(&plan, None).unwrap();
            let run = dry_run::run(&plan, &DryRunOptions::default())
                .unwrap_or_else(|e| panic!("{platform} {cpus} vCPUs: {e}"));
            assert_eq!(run.digest, expected, "{platform}, {cpus} vCPUs");
        }
    }
    // With one vCPU the IGVM launch measures exactly what the OVMF launch does.
    let direct = ovmf_plan(Platform::SevSnp, 1, 1).unwrap();
    let igvm = build_plan(&Payload::Igvm(path.clone()), &config(Platform::SevSnp, 1)).unwrap();
    assert_eq!(
        dry_run::run(&igvm, &DryRunOptions::default())
            .unwrap()
            .digest,
        measure::digest(&direct, None).unwrap()
    );
    let _ = std::fs::remove_file(path);
}
