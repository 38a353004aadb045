use veil_firmware::Platform;
use veil_firmware::measure;

use super::ovmf_plan;
use crate::dry_run::{self, DryRunOptions};
use crate::snp::launch::{SnpOptions, launch};
use crate::snp::model::{SnpModel, SnpModelConfig};

#[test]
fn model_digest_equals_veil_measure_for_ovmf_across_vcpus_and_features() {
    for features in [0x1, 0x21] {
        for cpus in [1, 2, 4, 16] {
            let Some(plan) = ovmf_plan(Platform::SevSnp, cpus, features) else {
                return;
            };
            let expected = measure::digest(&plan, None).unwrap();
            let run = dry_run::run(&plan, &DryRunOptions::default()).unwrap();
            assert_eq!(run.digest, expected, "{cpus} vCPUs, features {features:#x}");
        }
    }
}

#[test]
fn partial_progress_and_eagain_do_not_change_the_digest() {
    let Some(plan) = ovmf_plan(Platform::SevSnp, 2, 1) else {
        return;
    };
    let expected = measure::digest(&plan, None).unwrap();
    let mut m = SnpModel::new(SnpModelConfig {
        max_pages_per_update: Some(7),
        eagain_every: Some(3),
        ..Default::default()
    });
    let done = launch(&mut m, &plan, &SnpOptions::default()).unwrap();
    assert_eq!(m.launch_digest(), Some(expected));
    assert!(m.log().iter().any(|l| l.ends_with("-> EAGAIN")));
    assert!(m.log().iter().any(|l| l.contains("rest written back")));
    let pages: u64 = plan.imports.iter().map(|i| i.pages()).sum();
    assert!(done.update_calls > pages / 7, "{} calls", done.update_calls);
    assert_eq!(m.pages_measured(), pages + 2);
}

#[test]
fn a_different_register_state_gives_a_different_digest() {
    let Some(mut plan) = ovmf_plan(Platform::SevSnp, 1, 1) else {
        return;
    };
    let before = dry_run::run(&plan, &DryRunOptions::default())
        .unwrap()
        .digest;
    plan.vcpus[0].rdx ^= 1;
    let after = dry_run::run(&plan, &DryRunOptions::default()).unwrap();
    assert_ne!(before, after.digest);
    assert_eq!(after.digest, measure::digest(&plan, None).unwrap());
}

#[test]
fn policy_and_host_data_reach_the_platform() {
    let Some(mut plan) = ovmf_plan(Platform::SevSnp, 1, 1) else {
        return;
    };
    plan.host_data = [0xab; 32];
    let mut m = SnpModel::new(SnpModelConfig::default());
    let opts = SnpOptions {
        policy: Some(0x3_0000 | (1 << 19)),
    };
    launch(&mut m, &plan, &opts).unwrap();
    assert_eq!(m.policy(), 0xb_0000);
    assert_eq!(m.host_data(), [0xab; 32]);
    let log = m.log().join("\n");
    assert!(log.contains("SNP_LAUNCH_START policy=0xb0000"), "{log}");
    assert!(log.contains(&"ab".repeat(32)), "{log}");
}

#[test]
fn command_log_follows_the_kvm_sequence() {
    let Some(plan) = ovmf_plan(Platform::SevSnp, 2, 1) else {
        return;
    };
    let run = dry_run::run(&plan, &DryRunOptions::default()).unwrap();
    let pos = |needle: &str| {
        run.log
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing from {:#?}", run.log))
    };
    let order = [
        pos("open /dev/sev; KVM_CREATE_VM type=4"),
        pos("KVM_SEV_INIT2"),
        pos("KVM_ENABLE_CAP KVM_CAP_SPLIT_IRQCHIP args[0]=24"),
        pos("KVM_ENABLE_CAP KVM_CAP_EXIT_HYPERCALL"),
        pos("KVM_CREATE_GUEST_MEMFD"),
        pos("KVM_SET_MEMORY_ATTRIBUTES"),
        pos("SNP_LAUNCH_START"),
        pos("SNP_LAUNCH_UPDATE"),
        pos("KVM_CREATE_VCPU id=0"),
        pos("KVM_CREATE_VCPU id=1"),
        pos("SNP_LAUNCH_FINISH"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", run.log);
    assert!(run.log.iter().any(|l| l.contains("type=CPUID")));
    assert!(run.log.iter().any(|l| l.contains("type=SECRETS")));
    assert!(run.log.last().unwrap().contains("2 VMSAs measured"));
}
