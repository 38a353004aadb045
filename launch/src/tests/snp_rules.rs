//! The SNP model refuses each broken launch sequence, naming the rule.

use veil_firmware::Platform;
use veil_firmware::measure;

use super::ovmf_plan;
use crate::pages::PageBuffer;
use crate::platform::{PrivateMemory, Rule, SlotSpec};
use crate::regs::VcpuRegisters;
use crate::snp::cpuid_page;
use crate::snp::launch::{SnpOptions, launch};
use crate::snp::model::{SnpModel, SnpModelConfig, epyc_cpuid};
use crate::snp::{Init2, LaunchFinish, LaunchStart, SnpPlatform};
use crate::sys::snp::page_type;

const FINISH: LaunchFinish<'static> = LaunchFinish {
    id_block: None,
    id_auth: None,
    author_key: false,
    host_data: [0; 32],
};

/// A model with INIT2 done, 1 MiB of guest_memfd memory at 0 (private) and LAUNCH_START done.
fn started() -> SnpModel {
    let mut m = SnpModel::new(SnpModelConfig::default());
    m.init2(&Init2 {
        vmsa_features: 0,
        ghcb_version: 2,
    })
    .unwrap();
    m.add_slot(SlotSpec {
        slot: 0,
        gpa: 0,
        size: 1 << 20,
    })
    .unwrap();
    m.set_memory_attributes(0, 1 << 20, true).unwrap();
    m.launch_start(&LaunchStart {
        policy: 0x30000,
        gosvw: [0; 16],
    })
    .unwrap();
    m
}

fn rule_of<T: std::fmt::Debug>(r: Result<T, crate::platform::CommandError>) -> Rule {
    r.expect_err("the model must refuse")
        .rule
        .expect("a named rule")
}

#[test]
fn update_before_launch_start_is_refused() {
    let mut m = SnpModel::new(SnpModelConfig::default());
    m.init2(&Init2 {
        vmsa_features: 0,
        ghcb_version: 2,
    })
    .unwrap();
    assert_eq!(
        rule_of(m.launch_update(0, None, 1, page_type::ZERO)),
        Rule::Order
    );
}

#[test]
fn update_of_shared_memory_is_refused() {
    let mut m = started();
    m.set_memory_attributes(0x1000, 0x1000, false).unwrap();
    let err = m.launch_update(0, None, 2, page_type::ZERO).unwrap_err();
    assert_eq!(err.rule, Some(Rule::NotPrivate));
    assert_eq!(err.errno, libc::EINVAL);
    assert!(err.detail.contains("0x1000"), "{err}");
    // Outside every guest_memfd slot.
    assert_eq!(
        rule_of(m.launch_update(0x200, None, 1, page_type::ZERO)),
        Rule::NotPrivate
    );
}

#[test]
fn empty_and_overflowing_ranges_are_refused() {
    let mut m = started();
    assert_eq!(
        rule_of(m.launch_update(0, None, 0, page_type::ZERO)),
        Rule::Alignment
    );
    assert_eq!(
        rule_of(m.launch_update(u64::MAX, None, 1, page_type::ZERO)),
        Rule::Alignment
    );
    let mut b = PageBuffer::zeroed(2);
    assert_eq!(
        rule_of(m.launch_update(
            0,
            Some(&mut b.as_mut_slice()[8..8 + 4096]),
            1,
            page_type::NORMAL
        )),
        Rule::Alignment
    );
    let mut short = [0u8; 100];
    assert_eq!(
        rule_of(m.launch_update(0, Some(&mut short), 1, page_type::NORMAL)),
        Rule::Alignment
    );
}

#[test]
fn vmsa_pages_from_userspace_are_refused() {
    let mut m = started();
    let mut b = PageBuffer::zeroed(1);
    assert_eq!(
        rule_of(m.launch_update(0, Some(b.as_mut_slice()), 1, page_type::VMSA)),
        Rule::VmsaFromUserspace
    );
}

#[test]
fn a_page_is_launched_only_once() {
    let mut m = started();
    m.launch_update(4, None, 2, page_type::ZERO).unwrap();
    assert_eq!(
        rule_of(m.launch_update(5, None, 1, page_type::ZERO)),
        Rule::PageTwice
    );
}

#[test]
fn nothing_is_accepted_after_finish() {
    let mut m = started();
    m.create_vcpu(0).unwrap();
    m.launch_finish(&FINISH).unwrap();
    assert!(m.launch_digest().is_some());
    assert_eq!(
        rule_of(m.launch_update(0, None, 1, page_type::ZERO)),
        Rule::AfterFinish
    );
    assert_eq!(
        rule_of(m.set_vcpu_registers(0, &VcpuRegisters::default())),
        Rule::AfterFinish
    );
    assert_eq!(rule_of(m.launch_finish(&FINISH)), Rule::AfterFinish);
}

#[test]
fn init2_refuses_snp_active_and_unknown_features() {
    let mut m = SnpModel::new(SnpModelConfig::default());
    let r = m.init2(&Init2 {
        vmsa_features: 1,
        ghcb_version: 2,
    });
    assert_eq!(rule_of(r), Rule::Unsupported);
    let r = m.init2(&Init2 {
        vmsa_features: 1 << 2,
        ghcb_version: 2,
    });
    assert_eq!(rule_of(r), Rule::Unsupported);
}

#[test]
fn policy_without_the_reserved_bit_or_with_unknown_bits_is_refused() {
    for policy in [0x10000, 0x30000 | (1 << 18), 0x30000 | (1 << 40)] {
        let mut m = SnpModel::new(SnpModelConfig::default());
        m.init2(&Init2 {
            vmsa_features: 0,
            ghcb_version: 2,
        })
        .unwrap();
        let r = m.launch_start(&LaunchStart {
            policy,
            gosvw: [0; 16],
        });
        assert_eq!(rule_of(r), Rule::Unsupported, "policy {policy:#x}");
    }
    // ABI 2.0 is newer than the modelled firmware (1.55): firmware POLICY_FAILURE.
    let mut m = SnpModel::new(SnpModelConfig::default());
    m.init2(&Init2 {
        vmsa_features: 0,
        ghcb_version: 2,
    })
    .unwrap();
    let err = m
        .launch_start(&LaunchStart {
            policy: 0x30200,
            gosvw: [0; 16],
        })
        .unwrap_err();
    assert_eq!(err.fw_error, Some(0x07));
    assert!(err.to_string().contains("POLICY_FAILURE"), "{err}");
}

#[test]
fn a_vcpu_with_breakpoints_cannot_be_finished() {
    let mut m = started();
    m.create_vcpu(0).unwrap();
    let regs = VcpuRegisters {
        dr7: 0x401,
        ..Default::default()
    };
    m.set_vcpu_registers(0, &regs).unwrap();
    assert_eq!(rule_of(m.launch_finish(&FINISH)), Rule::VcpuState);
}

#[test]
fn cpuid_page_with_features_the_hardware_lacks_is_corrected_and_written_back() {
    let mut m = started();
    let mut entries = epyc_cpuid();
    entries[1].ecx |= 1 << 2; // leaf 1 ECX bit 2 (DTES64), which the modelled hardware lacks
    let fns = cpuid_page::functions_from_cpuid(&entries).unwrap();
    let mut b = PageBuffer::zeroed(1);
    cpuid_page::encode(&fns, b.as_mut_slice());
    let sent = b.as_slice().to_vec();
    let err = m
        .launch_update(8, Some(b.as_mut_slice()), 1, page_type::CPUID)
        .unwrap_err();
    assert_eq!(err.rule, Some(Rule::CpuidPage));
    assert_eq!(err.fw_error, Some(0x16));
    let diff = cpuid_page::diff(&sent, b.as_slice());
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(diff[0].starts_with("CPUID 0x1.0x0 ecx"), "{diff:?}");
    // The corrected page is accepted.
    m.launch_update(8, Some(b.as_mut_slice()), 1, page_type::CPUID)
        .unwrap();
}

#[test]
fn cpuid_page_with_too_many_functions_is_refused() {
    let mut m = started();
    let mut b = PageBuffer::zeroed(1);
    b.as_mut_slice()[0] = 65;
    assert_eq!(
        rule_of(m.launch_update(8, Some(b.as_mut_slice()), 1, page_type::CPUID)),
        Rule::CpuidPage
    );
}

#[test]
fn the_driver_retries_a_rejected_cpuid_page_once_and_the_digest_holds() {
    let Some(plan) = ovmf_plan(Platform::SevSnp, 1, 1) else {
        return;
    };
    let mut supported = epyc_cpuid();
    supported[2].ebx |= 1 << 30; // leaf 7 EBX bit the modelled hardware lacks
    let mut m = SnpModel::new(SnpModelConfig {
        supported_cpuid: supported,
        ..Default::default()
    });
    let done = launch(&mut m, &plan, &SnpOptions::default()).unwrap();
    assert_eq!(
        done.cpuid_corrections.len(),
        1,
        "{:?}",
        done.cpuid_corrections
    );
    assert!(done.cpuid_corrections[0].contains("CPUID 0x7.0x0 ebx"));
    assert_eq!(
        m.launch_digest(),
        Some(measure::digest(&plan, None).unwrap())
    );
}
