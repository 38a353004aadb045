use veil_firmware::Platform;
use veil_firmware::measure;
use veil_firmware::plan::PageKind;

use super::ovmf_plan;
use crate::dry_run::{self, DryRunOptions};
use crate::tdx::hob;
use crate::tdx::launch::{TdxOptions, launch};
use crate::tdx::model::{TdxModel, TdxModelConfig};

#[test]
fn model_mrtd_equals_veil_measure_for_ovmf_across_vcpus() {
    for cpus in [1, 2, 8] {
        let Some(plan) = ovmf_plan(Platform::Tdx, cpus, 0) else {
            return;
        };
        let expected = measure::digest(&plan, None).unwrap();
        let run = dry_run::run(&plan, &DryRunOptions::default()).unwrap();
        assert_eq!(run.digest, expected, "{cpus} vCPUs");
        let vcpu_inits = run
            .log
            .iter()
            .filter(|l| l.starts_with("KVM_TDX_INIT_VCPU"))
            .count();
        assert_eq!(vcpu_inits, cpus as usize);
    }
}

#[test]
fn e2big_eagain_and_partial_progress_do_not_change_mrtd() {
    let Some(plan) = ovmf_plan(Platform::Tdx, 1, 0) else {
        return;
    };
    let config = TdxModelConfig::default();
    let mut m = TdxModel::new(TdxModelConfig {
        init_vm_eagain: 2,
        max_pages_per_call: Some(5),
        ..config
    });
    launch(&mut m, &plan, &TdxOptions::default()).unwrap();
    assert_eq!(m.mrtd(), Some(measure::digest(&plan, None).unwrap()));
    let log = m.log().join("\n");
    assert_eq!(log.matches("KVM_TDX_INIT_VM -> EAGAIN").count(), 2, "{log}");
    assert!(log.contains("rest written back"), "{log}");
    let measured: u64 = plan
        .imports
        .iter()
        .filter(|i| i.kind != PageKind::Unmeasured)
        .map(|i| i.pages())
        .sum();
    let all: u64 = plan.imports.iter().map(|i| i.pages()).sum();
    assert_eq!(m.page_counts(), (all, measured));
}

#[test]
fn the_td_hob_describes_ram_and_is_unmeasured() {
    let Some(plan) = ovmf_plan(Platform::Tdx, 1, 0) else {
        return;
    };
    let hob_gpa = plan.td_hob.expect("Debian's OVMF has a TD_HOB section");
    let imp = plan.imports.iter().find(|i| i.gpa == hob_gpa).unwrap();
    assert_eq!(imp.kind, PageKind::Unmeasured);
    let mut added = crate::RangeSet::default();
    for i in &plan.imports {
        added.insert(i.gpa, i.gpa + i.size);
    }
    let res = hob::resources(&plan.memory, &added);
    let total: u64 = res.iter().map(|r| r.length).sum();
    assert_eq!(total, 512 << 20, "{res:#x?}");
    assert!(
        res.iter()
            .any(|r| r.kind == hob::RESOURCE_MEMORY_UNACCEPTED)
    );
    assert!(res.iter().any(
        |r| r.kind == hob::RESOURCE_SYSTEM_MEMORY && r.start == hob_gpa
            || r.start < hob_gpa
                && r.start + r.length > hob_gpa
                && r.kind == hob::RESOURCE_SYSTEM_MEMORY
    ));
}

#[test]
fn attributes_beyond_the_modules_support_are_refused_before_init_vm() {
    let Some(plan) = ovmf_plan(Platform::Tdx, 1, 0) else {
        return;
    };
    let mut m = TdxModel::new(TdxModelConfig::default());
    let err = launch(
        &mut m,
        &plan,
        &TdxOptions {
            attributes: Some(1 << 40),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("0x10000000000"), "{err}");
    assert!(!m.log().iter().any(|l| l.starts_with("KVM_TDX_INIT_VM")));
}
