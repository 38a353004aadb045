//! Per-vCPU CPUID: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), with the topology, APIC ids and
//! hypervisor leaves set for this machine. Topology: one socket, one core per vCPU, one thread per
//! core; APIC id = vCPU index.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

/// Errors from building CPUID tables.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The table would exceed KVM's entry limit.
    #[error("CPUID table: too many entries for KVM: {0:?}")]
    TooBig(vmm_sys_util::fam::Error),
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
/// The hypervisor timing leaf: EAX = TSC kHz, EBX = local-APIC timer (bus) kHz.
const LEAF_TIMING: u32 = 0x4000_0010;
/// KVM's local-APIC timer counts at 1 GHz before the divider.
const APIC_BUS_KHZ: u32 = 1_000_000;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_EXT_SIZES: u32 = 0x8000_0008;
const LEAF_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
const ECX_CMP_LEGACY: u32 = 1 << 1;

/// Bits needed to hold `n - 1` (the APIC-id field width for `n` cores).
fn id_bits(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

fn is_intel(base: &[kvm_cpuid_entry2]) -> bool {
    base.iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| (e.ebx, e.edx, e.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e))
}

/// Topology subleaves for leaf 0xb / 0x1f: SMT level (1 thread), core level (`cpus` cores).
fn topology_entries(function: u32, apic_id: u32, cpus: u32) -> [kvm_cpuid_entry2; 3] {
    let e = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: apic_id,
        ..Default::default()
    };
    [e(0, 0, 1, 1), e(1, id_bits(cpus), cpus, 2), e(2, 0, 0, 0)]
}

/// What the host tells about the vCPU beyond KVM's supported CPUID.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFacts {
    /// Whether KVM emulates the TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
    /// The vCPU's TSC frequency in kHz (`KVM_GET_TSC_KHZ`), if known.
    pub tsc_khz: Option<u32>,
}

/// The CPUID table for vCPU `id` of `cpus`, from KVM's supported table `base`.
pub fn for_vcpu(base: &CpuId, id: u32, cpus: u32, host: HostFacts) -> Result<CpuId, CpuidError> {
    let tsc_deadline = host.tsc_deadline;
    let intel = is_intel(base.as_slice());
    let max_basic = base
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let mut entries: Vec<kvm_cpuid_entry2> = base
        .as_slice()
        .iter()
        .filter(|e| e.function != LEAF_TOPOLOGY && e.function != LEAF_TOPOLOGY_V2)
        .copied()
        .collect();
    let mut have_hypervisor_leaf = false;
    for e in &mut entries {
        match e.function {
            LEAF_FEATURES => {
                e.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                // EBX: initial APIC id [31:24], logical processors per package [23:16],
                // CLFLUSH line size [15:8] kept from the host.
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | (cpus.min(255) << 16);
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS if intel => {
                // EAX[31:26]: cores per package - 1. EAX[25:14]: threads sharing this cache - 1
                // (one thread per core; caches at level 3 are shared by the package).
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { cpus - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((cpus - 1) << 26) | (sharing << 14);
            }
            LEAF_HYPERVISOR => {
                have_hypervisor_leaf = true;
                // EAX: the highest hypervisor leaf; EBX/ECX/EDX: KVM's signature as KVM gives it.
                e.eax = e.eax.max(LEAF_KVM_FEATURES);
                if host.tsc_khz.is_some() {
                    e.eax = e.eax.max(LEAF_TIMING);
                }
            }
            LEAF_EXT_FEATURES if !intel => {
                if cpus > 1 {
                    e.ecx |= ECX_CMP_LEGACY;
                } else {
                    e.ecx &= !ECX_CMP_LEGACY;
                }
            }
            LEAF_EXT_SIZES if !intel => {
                // ECX[15:12]: APIC-id bits for cores; ECX[7:0]: cores per package - 1.
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(cpus) << 12) | (cpus - 1);
            }
            LEAF_EXT_APIC_ID => {
                e.eax = id; // extended APIC id
                e.ebx = id & 0xff; // core id; threads per core - 1 = 0
                e.ecx = 0; // node 0, one node per package
            }
            _ => {}
        }
    }
    if max_basic >= LEAF_TOPOLOGY {
        entries.extend(topology_entries(LEAF_TOPOLOGY, id, cpus));
    }
    if max_basic >= LEAF_TOPOLOGY_V2 {
        entries.extend(topology_entries(LEAF_TOPOLOGY_V2, id, cpus));
    }
    if !have_hypervisor_leaf {
        log::debug!("KVM reports no hypervisor CPUID leaves; the guest sees none");
    } else if let Some(khz) = host.tsc_khz {
        // Guests without a PIT to calibrate against read the TSC frequency here.
        entries.retain(|e| e.function != LEAF_TIMING);
        entries.push(kvm_cpuid_entry2 {
            function: LEAF_TIMING,
            eax: khz,
            ebx: APIC_BUS_KHZ,
            ..Default::default()
        });
    }
    CpuId::from_entries(&entries).map_err(CpuidError::TooBig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A small AMD-like supported table.
    fn amd_base() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(1, 0, [0x00a0_0f11, 0x0012_0800, 0x0000_0001, 0x1789_3bff]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(
                LEAF_HYPERVISOR,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(LEAF_KVM_FEATURES, 0, [0x01ff_ffff, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0021, 0, 0, 0]),
            entry(LEAF_EXT_FEATURES, 0, [0, 0, 0x3, 0]),
            entry(LEAF_EXT_SIZES, 0, [0x3030, 0, 0x7007, 0]),
            entry(LEAF_EXT_APIC_ID, 0, [9, 0x100, 0x300, 0]),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn apic_ids_and_topology_per_vcpu() {
        let base = amd_base();
        let host = HostFacts {
            tsc_deadline: true,
            tsc_khz: Some(2_400_000),
        };
        let c = for_vcpu(&base, 2, 4, host).unwrap();
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        // Leaf 0xb: SMT level with 1 thread, core level with 4 cores, then the end marker.
        assert_eq!(c.as_slice().iter().filter(|e| e.function == 0xb).count(), 3);
        let smt = find(&c, 0xb, 0);
        let core = find(&c, 0xb, 1);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 4, 2, 2));
        assert_eq!(find(&c, 0xb, 2).ecx >> 8, 0);
        let sizes = find(&c, LEAF_EXT_SIZES, 0);
        assert_eq!((sizes.ecx & 0xff, (sizes.ecx >> 12) & 0xf), (3, 2));
        assert_eq!(find(&c, LEAF_EXT_APIC_ID, 0).eax, 2);
        assert_eq!(find(&c, LEAF_HYPERVISOR, 0).ebx, 0x4b4d_564b);
        assert_eq!(find(&c, LEAF_HYPERVISOR, 0).eax, LEAF_TIMING);
        let timing = find(&c, LEAF_TIMING, 0);
        assert_eq!((timing.eax, timing.ebx), (2_400_000, 1_000_000));
    }

    #[test]
    fn a_single_vcpu_is_not_multicore() {
        let c = for_vcpu(&amd_base(), 0, 1, HostFacts::default()).unwrap();
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.edx & EDX_HTT, 0);
        assert_eq!(l1.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(find(&c, LEAF_EXT_FEATURES, 0).ecx & ECX_CMP_LEGACY, 0);
        assert_eq!(find(&c, 0xb, 1).ebx, 1);
        assert_eq!(find(&c, LEAF_HYPERVISOR, 0).eax, LEAF_KVM_FEATURES);
        assert!(c.as_slice().iter().all(|e| e.function != LEAF_TIMING));
    }

    #[test]
    fn id_bits_is_the_field_width() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 254].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 8]
        );
    }
}
