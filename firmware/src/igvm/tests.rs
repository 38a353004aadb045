//! Loader rules on hand-made IGVM files.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType};
use zerocopy::{FromBytes, FromZeros};

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

#[test]
fn snp_id_block_directive_becomes_a_verifiable_pair() {
    use crate::id_block::{self, IdBlockInput};
    use igvm_defs::{IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE};
    let key = |n: u8| {
        let mut b = [0u8; 48];
        b[0] = 0x21;
        b[47] = n;
        p384::ecdsa::SigningKey::from_slice(&b).expect("valid scalar")
    };
    let input = IdBlockInput {
        measurement: [9; 48],
        family_id: [1; 16],
        image_id: [2; 16],
        version: 1,
        guest_svn: 4,
        policy: 0x30000,
    };
    let (_, auth) = id_block::build(&input, &key(3), Some(&key(4)));
    let sig = |at: usize| {
        let mut s = IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: [0; 72],
            s_comp: [0; 72],
        };
        s.r_comp.copy_from_slice(&auth[at..at + 72]);
        s.s_comp.copy_from_slice(&auth[at + 72..at + 144]);
        Box::new(s)
    };
    let pubkey = |at: usize| {
        let mut k = IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: 2,
            reserved: 0,
            qx: [0; 72],
            qy: [0; 72],
        };
        k.qx.copy_from_slice(&auth[at + 4..at + 76]);
        k.qy.copy_from_slice(&auth[at + 76..at + 148]);
        Box::new(k)
    };
    let d = IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: 1,
        author_key_enabled: 1,
        reserved: [0; 3],
        ld: input.measurement,
        family_id: input.family_id,
        image_id: input.image_id,
        version: 1,
        guest_svn: 4,
        id_key_algorithm: 1,
        author_key_algorithm: 1,
        id_key_signature: sig(0x40),
        id_public_key: pubkey(0x240),
        author_key_signature: sig(0x680),
        author_public_key: pubkey(0x880),
    };
    let f = file(Platform::SevSnp, vec![page(0x10_0000, 1), d]);
    let plan = load(&f, &config(Platform::SevSnp)).unwrap();
    let pair = plan.id_block.expect("the ID block is in the plan");
    assert!(pair.author_key_enabled);
    let v = id_block::verify(&pair.id_block, &pair.id_auth).unwrap();
    assert_eq!(
        v.id_key_digest,
        id_block::key_digest(key(3).verifying_key())
    );
}

#[test]
fn native_vp_context_sets_plain_state_and_is_refused_on_tdx() {
    let mut ctx = igvm_defs::IgvmNativeVpContextX64::new_zeroed();
    ctx.rip = 0x10_0000;
    ctx.cr0 = 0x11;
    ctx.code_selector = 8;
    ctx.code_attributes = 0xc9b;
    ctx.code_limit = 0xffff_ffff;
    let vp = |mask| IgvmDirectiveHeader::X64NativeVpContext {
        compatibility_mask: mask,
        vp_index: 0,
        context: Box::new(ctx),
    };
    let f = file(Platform::None, vec![page(0x10_0000, 1), vp(1)]);
    let plan = load(&f, &config(Platform::None)).unwrap();
    assert_eq!(plan.vcpus[0].rip, 0x10_0000);
    assert_eq!(plan.vcpus[0].cs.selector, 8);
    // On TDX the igvm crate already refuses a native context when parsing the file.
    let f = file(Platform::Tdx, vec![page(0x10_0000, 1), vp(1)]);
    assert!(load(&f, &config(Platform::Tdx)).is_err());
}
