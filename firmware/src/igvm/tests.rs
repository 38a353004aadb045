//! Loader rules on hand-made IGVM files.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType};
use zerocopy::FromBytes;

use super::{IgvmLoadError, isolation, load};
use crate::measure::vmsa;
use crate::payload::VmConfig;
use crate::plan::{Platform, SNP_VMSA_GPA, VcpuState};

fn config(platform: Platform) -> VmConfig {
    VmConfig {
        platform,
        cpus: 1,
        memory: 64 << 20,
        cpu_signature: 0xa00f11,
        sev_features: 1,
        policy: None,
        host_data: [0; 32],
        cmdline: Some("console=ttyS0".into()),
    }
}

fn page(gpa: u64, fill: u8) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: 1,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::NORMAL,
        data: vec![fill; 4096],
    }
}

fn vmsa_ctx(vp_index: u16, state: &VcpuState) -> IgvmDirectiveHeader {
    let p = vmsa::build(state, 1);
    let v = igvm::snp_defs::SevVmsa::read_from_bytes(&p[..size_of::<igvm::snp_defs::SevVmsa>()])
        .expect("a VMSA page holds a SevVmsa");
    IgvmDirectiveHeader::SnpVpContext {
        gpa: SNP_VMSA_GPA,
        compatibility_mask: 1,
        vp_index,
        vmsa: Box::new(v),
    }
}

fn file(platform: Platform, directives: Vec<IgvmDirectiveHeader>) -> Vec<u8> {
    let headers = vec![IgvmPlatformHeader::SupportedPlatform(
        IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: 1,
            highest_vtl: 0,
            platform_type: isolation(platform),
            platform_version: 1,
            shared_gpa_boundary: 0,
        },
    )];
    let inits = if platform == Platform::SevSnp {
        vec![IgvmInitializationHeader::GuestPolicy {
            policy: 0x30000,
            compatibility_mask: 1,
        }]
    } else {
        vec![]
    };
    let f = IgvmFile::new(IgvmRevision::V1, headers, inits, directives).expect("valid headers");
    let mut out = Vec::new();
    f.serialize(&mut out).expect("serializes");
    out
}

#[test]
fn overlapping_pages_are_rejected() {
    let f = file(Platform::Tdx, vec![page(0x10_0000, 1), page(0x10_0000, 2)]);
    let e = load(&f, &config(Platform::Tdx)).unwrap_err();
    assert!(
        matches!(e, IgvmLoadError::Overlap { gpa: 0x10_0000, .. }),
        "{e}"
    );
}

#[test]
fn pages_outside_guest_memory_are_rejected() {
    let f = file(Platform::Tdx, vec![page(0x2_0000_0000, 1)]);
    let e = load(&f, &config(Platform::Tdx)).unwrap_err();
    assert!(matches!(e, IgvmLoadError::OutsideMemory { .. }), "{e}");
    assert!(e.to_string().contains("0x200000000"));
}

#[test]
fn platform_missing_from_the_file_is_named() {
    let f = file(Platform::Tdx, vec![page(0x10_0000, 1)]);
    let e = load(&f, &config(Platform::SevSnp)).unwrap_err();
    assert!(
        e.to_string().contains("does not support platform sev-snp"),
        "{e}"
    );
    assert!(e.to_string().contains("tdx"), "{e}");
}

#[test]
fn kvm_vmsa_rules_are_enforced() {
    let s = VcpuState::reset(0xffff_fff0, 0xa00f11);
    let not_last = file(Platform::SevSnp, vec![vmsa_ctx(0, &s), page(0x10_0000, 1)]);
    let e = load(&not_last, &config(Platform::SevSnp)).unwrap_err();
    assert!(e.to_string().contains("must be the last directive"), "{e}");
    let wrong_vp = file(Platform::SevSnp, vec![page(0x10_0000, 1), vmsa_ctx(1, &s)]);
    let e = load(&wrong_vp, &config(Platform::SevSnp)).unwrap_err();
    assert!(e.to_string().contains("vCPU 1"), "{e}");
    let mut odd = s.clone();
    odd.cr0 = 0x8000_0011;
    let bad_cr0 = file(Platform::SevSnp, vec![vmsa_ctx(0, &odd)]);
    let e = load(&bad_cr0, &config(Platform::SevSnp)).unwrap_err();
    assert!(e.to_string().contains("CR0"), "{e}");
    let ok = file(Platform::SevSnp, vec![page(0x10_0000, 1), vmsa_ctx(0, &s)]);
    let plan = load(&ok, &config(Platform::SevSnp)).unwrap();
    assert_eq!(plan.vcpus[0], s);
    assert_eq!(plan.policy, Some(0x30000));
}

#[test]
fn parameter_areas_are_filled_and_inserted_unmeasured() {
    use igvm_defs::{IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT};
    let f = file(
        Platform::Tdx,
        vec![
            page(0x10_0000, 1),
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes: 4096,
                parameter_area_index: 0,
                initial_data: vec![],
            },
            IgvmDirectiveHeader::VpCount(IGVM_VHS_PARAMETER {
                parameter_area_index: 0,
                byte_offset: 0,
            }),
            IgvmDirectiveHeader::CommandLine(IGVM_VHS_PARAMETER {
                parameter_area_index: 0,
                byte_offset: 8,
            }),
            IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa: 0x20_0000,
                compatibility_mask: 1,
                parameter_area_index: 0,
            }),
        ],
    );
    let mut c = config(Platform::Tdx);
    c.cpus = 3;
    let plan = load(&f, &c).unwrap();
    let imp = &plan.imports[1];
    assert_eq!(imp.kind, crate::plan::PageKind::Unmeasured);
    let bytes = imp.page_slice(0).unwrap();
    assert_eq!(&bytes[..4], &3u32.to_le_bytes());
    assert_eq!(&bytes[8..22], b"console=ttyS0\0");
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let f = file(Platform::Tdx, vec![page(0x10_0000, 1)]);
    for len in [0, 10, 40, f.len() / 2, f.len() - 1] {
        assert!(
            load(&f[..len], &config(Platform::Tdx)).is_err(),
            "length {len}"
        );
    }
    let mut bad = f.clone();
    bad[60] ^= 0x40; // inside the variable headers: the CRC no longer matches
    assert!(load(&bad, &config(Platform::Tdx)).is_err());
}
