//! The TDX model refuses each broken launch sequence, naming the rule.

use crate::pages::PageBuffer;
use crate::platform::{CommandError, PrivateMemory, Rule, SlotSpec};
use crate::sys::tdx::{TD_ATTR_SEPT_VE_DISABLE, XFAM_FIXED1};
use crate::tdx::model::{TdxModel, TdxModelConfig};
use crate::tdx::{InitVm, TdxPlatform};

fn init() -> InitVm {
    InitVm {
        attributes: TD_ATTR_SEPT_VE_DISABLE,
        xfam: XFAM_FIXED1,
        mrconfigid: [0; 48],
        mrowner: [0; 48],
        mrownerconfig: [0; 48],
        cpuid: Vec::new(),
    }
}

/// INIT_VM done, vCPU 0 created and initialised, 1 MiB of private memory at 0.
fn ready() -> TdxModel {
    let mut m = TdxModel::new(TdxModelConfig::default());
    m.init_vm(&init()).unwrap();
    m.add_slot(SlotSpec {
        slot: 0,
        gpa: 0,
        size: 1 << 20,
    })
    .unwrap();
    m.set_memory_attributes(0, 1 << 20, true).unwrap();
    m.create_vcpu(0).unwrap();
    m.init_vcpu(0, 0).unwrap();
    m
}

fn rule_of<T: std::fmt::Debug>(r: Result<T, CommandError>) -> Rule {
    r.expect_err("the model must refuse")
        .rule
        .expect("a named rule")
}

#[test]
fn vcpus_before_init_vm_are_refused_and_init_vm_after_vcpus_too() {
    let mut m = TdxModel::new(TdxModelConfig::default());
    assert_eq!(rule_of(m.create_vcpu(0)), Rule::InitVmBeforeVcpus);
    let mut m = ready();
    assert_eq!(rule_of(m.init_vm(&init())), Rule::InitVmBeforeVcpus);
}

#[test]
fn init_vm_refuses_unsupported_attributes_xfam_and_cpuid() {
    let mut m = TdxModel::new(TdxModelConfig::default());
    let mut i = init();
    i.attributes |= 1 << 40;
    assert_eq!(rule_of(m.init_vm(&i)), Rule::Unsupported);
    let mut i = init();
    i.xfam = 0x4;
    assert_eq!(rule_of(m.init_vm(&i)), Rule::Unsupported);
    let mut i = init();
    i.cpuid.push(kvm_bindings::kvm_cpuid_entry2 {
        function: 0x4000_0000,
        ..Default::default()
    });
    assert_eq!(rule_of(m.init_vm(&i)), Rule::Unsupported);
}

#[test]
fn a_page_is_added_only_once() {
    let mut m = ready();
    let b = PageBuffer::zeroed(2);
    m.init_mem_region(0, b.as_slice(), 0x2000, 2, true).unwrap();
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x3000, 1, false)),
        Rule::PageTwice
    );
}

#[test]
fn mem_region_needs_private_aligned_memory_and_an_initialised_vcpu() {
    let mut m = ready();
    let b = PageBuffer::zeroed(1);
    m.set_memory_attributes(0x5000, 0x1000, false).unwrap();
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x5000, 1, true)),
        Rule::NotPrivate
    );
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x5100, 1, true)),
        Rule::Alignment
    );
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x6000, 0, true)),
        Rule::Alignment
    );
    let two = PageBuffer::zeroed(2);
    assert_eq!(
        rule_of(m.init_mem_region(0, &two.as_slice()[16..16 + 4096], 0x6000, 1, true)),
        Rule::Alignment
    );
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x20_0000, 1, true)),
        Rule::NotPrivate
    );
    m.create_vcpu(1).unwrap();
    assert_eq!(
        rule_of(m.init_mem_region(1, b.as_slice(), 0x6000, 1, true)),
        Rule::Order
    );
}

#[test]
fn finalize_comes_last() {
    let mut m = ready();
    m.finalize().unwrap();
    assert!(m.mrtd().is_some());
    let b = PageBuffer::zeroed(1);
    assert_eq!(
        rule_of(m.init_mem_region(0, b.as_slice(), 0x8000, 1, true)),
        Rule::AfterFinish
    );
    assert_eq!(rule_of(m.create_vcpu(2)), Rule::AfterFinish);
    assert_eq!(rule_of(m.finalize()), Rule::AfterFinish);
}

#[test]
fn finalize_without_init_vm_is_refused() {
    let mut m = TdxModel::new(TdxModelConfig::default());
    assert_eq!(rule_of(m.finalize()), Rule::Order);
}
