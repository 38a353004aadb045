//! Loading an IGVM file into a launch plan for one platform, keeping the file's order.
//!
//! Conventions follow what QEMU and cloud-hypervisor do under KVM (igvmmeasure `--native-zero`,
//! `--check-kvm`): data-less pages are imported as ZERO on SNP, parameter inserts as UNMEASURED,
//! and the only VP context allowed is one SNP VMSA for vCPU 0 at 0xFFFFFFFFF000, after every
//! page, whose registers KVM can reproduce exactly (KVM, not the file, writes the VMSA).

use std::collections::BTreeMap;

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::{IgvmPageDataType, PAGE_SIZE_4K};
use zerocopy::IntoBytes;

use super::params::{self, Area};
use super::{IgvmLoadError, isolation};
use crate::id_block::{ID_AUTH_SIZE, PUBKEY_SIZE};
use crate::linux;
use crate::measure::vmsa;
use crate::ovmf::{footer, sev};
use crate::payload::{BSP_RESET_EIP, VmConfig};
use crate::plan::{
    Blob, IdBlockPair, LaunchPlan, PAGE_SIZE, PageData, PageImport, PageKind, Platform,
    SNP_VMSA_GPA, VcpuState, in_guest_memory,
};

fn platform_name(t: igvm_defs::IgvmPlatformType) -> String {
    match t {
        igvm_defs::IgvmPlatformType::NATIVE => "native".into(),
        igvm_defs::IgvmPlatformType::SEV_SNP => "sev-snp".into(),
        igvm_defs::IgvmPlatformType::TDX => "tdx".into(),
        igvm_defs::IgvmPlatformType::VSM_ISOLATION => "vbs".into(),
        igvm_defs::IgvmPlatformType::SEV => "sev".into(),
        igvm_defs::IgvmPlatformType::SEV_ES => "sev-es".into(),
        other => format!("type {:#x}", other.0),
    }
}

/// Checks that `[gpa, gpa+size)` is guest RAM or inside the firmware window below 4 GiB.
fn check_in_memory(
    what: &str,
    gpa: u64,
    size: u64,
    config: &VmConfig,
) -> Result<(), IgvmLoadError> {
    if in_guest_memory(gpa, size, config.memory) {
        Ok(())
    } else {
        Err(IgvmLoadError::OutsideMemory {
            what: what.to_string(),
            gpa,
            size,
            memory: config.memory,
        })
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Checks the file offsets of data-carrying headers before the igvm crate sees them: igvm 0.5
/// subtracts and slices with them unchecked, which panics on a crafted file. Anything else
/// malformed is left to the crate, which reports it.
fn check_file_offsets(bytes: &[u8]) -> Result<(), IgvmLoadError> {
    let (Some(version), Some(off), Some(size), Some(total), Some(crc)) = (
        le32(bytes, 4),
        le32(bytes, 8),
        le32(bytes, 12),
        le32(bytes, 16),
        le32(bytes, 20),
    ) else {
        return Ok(());
    };
    // Leave files with a wrong size or checksum to the crate, which says so precisely.
    let fixed = if version == 1 { 24 } else { 32 };
    if total as usize != bytes.len() || bytes.len() < fixed {
        return Ok(());
    }
    let (off, size) = (off as usize, size as usize);
    let Some(headers) = off.checked_add(size).and_then(|end| bytes.get(off..end)) else {
        return Err(IgvmLoadError::Unsupported(format!(
            "the variable headers ({size:#x} bytes at {off:#x}) run past the end of the file ({:#x} bytes)",
            bytes.len()
        )));
    };
    let mut fixed_header = bytes[..fixed].to_vec();
    fixed_header[20..24].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&fixed_header);
    h.update(headers);
    if h.finalize() != crc {
        return Ok(());
    }
    let data_start = off + size;
    let mut at = 0usize;
    let mut index = 0usize;
    while let (Some(typ), Some(len)) = (le32(headers, at), le32(headers, at + 4)) {
        let body = at + 8;
        let known = matches!(typ, 0x1 | 0x101..=0x107 | 0x301..=0x305 | 0x307..=0x313);
        if !known {
            let what = if typ & (1 << 31) == 0 {
                "an unknown required header"
            } else {
                "an optional header this parser cannot skip"
            };
            return Err(IgvmLoadError::Unsupported(format!(
                "variable header {index} has type {typ:#x}: {what}"
            )));
        }
        if matches!(typ, 0x301 | 0x302 | 0x304) {
            if let Some(file_offset) = le32(headers, body + 12) {
                let fo = file_offset as usize;
                if fo != 0 && (fo < data_start || fo > bytes.len()) {
                    return Err(IgvmLoadError::Unsupported(format!(
                        "variable header {index} (type {typ:#x}) points at file offset {fo:#x}, outside the file data {data_start:#x}..{:#x}",
                        bytes.len()
                    )));
                }
            }
        }
        let Some(next) = (len as usize).checked_add(7).map(|l| body + (l & !7)) else {
            break;
        };
        at = next;
        index += 1;
    }
    Ok(())
}

/// Loads `bytes` (an IGVM file) for `config.platform`.
pub fn load(bytes: &[u8], config: &VmConfig) -> Result<LaunchPlan, IgvmLoadError> {
    check_file_offsets(bytes)?;
    let file = IgvmFile::new_from_binary(bytes, None).map_err(IgvmLoadError::Parse)?;
    let wanted = isolation(config.platform);
    let mut supported = Vec::new();
    let mut mask = None;
    for p in file.platforms() {
        let IgvmPlatformHeader::SupportedPlatform(sp) = p;
        supported.push(platform_name(sp.platform_type));
        if sp.platform_type == wanted {
            mask = Some(sp.compatibility_mask);
        }
    }
    let mask = mask.ok_or_else(|| IgvmLoadError::PlatformNotSupported {
        wanted: config.platform,
        supported: supported.join(", "),
    })?;
    let mut plan = LaunchPlan::new(config.platform);
    plan.memory = linux::memory_layout(config.memory);
    plan.sev_features = config.sev_features;
    for init in file.initializations() {
        if let IgvmInitializationHeader::GuestPolicy {
            policy,
            compatibility_mask,
        } = init
        {
            if compatibility_mask & mask != 0 {
                plan.policy = Some(*policy);
            }
        }
    }

    let mut areas: BTreeMap<u32, Area> = BTreeMap::new();
    let mut vmsa_state: Option<VcpuState> = None;
    let mut native_state: Option<VcpuState> = None;
    // Occupied pages: page number -> index of the import that holds it.
    let mut occupied: BTreeMap<u64, usize> = BTreeMap::new();
    let mut push = |plan: &mut LaunchPlan, imp: PageImport| -> Result<(), IgvmLoadError> {
        check_in_memory(&imp.label, imp.gpa, imp.size, config)?;
        let index = plan.imports.len();
        for p in 0..imp.pages() {
            let page = imp.gpa / PAGE_SIZE + p;
            if let Some(&other) = occupied.get(&page) {
                let o: &PageImport = &plan.imports[other];
                return Err(IgvmLoadError::Overlap {
                    gpa: page * PAGE_SIZE,
                    other: o.label.clone(),
                    other_gpa: o.gpa,
                });
            }
            occupied.insert(page, index);
        }
        // Merge runs of consecutive same-kind zero pages so traces and replays stay short.
        if let Some(last) = plan.imports.last_mut() {
            if last.kind == imp.kind
                && last.data == PageData::Zero
                && imp.data == PageData::Zero
                && last.gpa + last.size == imp.gpa
                && last.label == imp.label
            {
                last.size += imp.size;
                return Ok(());
            }
        }
        plan.imports.push(imp);
        Ok(())
    };

    for d in file.directives() {
        if vmsa_state.is_some() && !matches!(d, IgvmDirectiveHeader::SnpIdBlock { .. }) {
            if let Some(m) = directive_mask(d) {
                if m & mask != 0 {
                    return Err(IgvmLoadError::KvmVmsaRule(format!(
                        "a {} directive follows the VMSA; KVM measures VMSAs last, so the VMSA must \
                         be the last directive",
                        directive_name(d)
                    )));
                }
            }
        }
        match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                flags,
                data_type,
                data,
            } if compatibility_mask & mask != 0 => {
                let size = if flags.is_2mb_page() {
                    2 << 20
                } else {
                    PAGE_SIZE_4K
                };
                if gpa % size != 0 {
                    return Err(IgvmLoadError::Unsupported(format!(
                        "page data at {gpa:#x} is not aligned to its size {size:#x}"
                    )));
                }
                if flags.shared() {
                    return Err(IgvmLoadError::Unsupported(format!(
                        "shared page data at {gpa:#x}: host-visible pages are not supported"
                    )));
                }
                let pd = if data.is_empty() {
                    PageData::Zero
                } else {
                    PageData::Bytes {
                        blob: Blob::from(data.as_slice()),
                        offset: 0,
                    }
                };
                let kind = match (*data_type, config.platform) {
                    (IgvmPageDataType::NORMAL, _) if flags.unmeasured() => PageKind::Unmeasured,
                    (IgvmPageDataType::NORMAL, _) if data.is_empty() => PageKind::Zero,
                    (IgvmPageDataType::NORMAL, _) => PageKind::Normal,
                    (IgvmPageDataType::SECRETS, Platform::SevSnp) => PageKind::Secrets,
                    (
                        IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF,
                        Platform::SevSnp,
                    ) => PageKind::Cpuid,
                    (t, p) => {
                        return Err(IgvmLoadError::Unsupported(format!(
                            "page data type {:#x} at {gpa:#x} has no meaning on {p}",
                            t.0
                        )));
                    }
                };
                let label = match kind {
                    PageKind::Secrets => "IGVM secrets page",
                    PageKind::Cpuid => "IGVM CPUID page",
                    _ => "IGVM page data",
                };
                push(
                    &mut plan,
                    PageImport {
                        gpa: *gpa,
                        size,
                        kind,
                        data: pd,
                        label: label.into(),
                    },
                )?;
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                let n = usize::try_from(*number_of_bytes)
                    .ok()
                    .filter(|n| *n <= 64 << 20)
                    .ok_or_else(|| {
                        IgvmLoadError::Unsupported(format!(
                            "parameter area {parameter_area_index} of {number_of_bytes} bytes is too large"
                        ))
                    })?;
                let mut bytes = initial_data.clone();
                bytes.resize(n, 0);
                areas.insert(*parameter_area_index, Area { bytes });
            }
            IgvmDirectiveHeader::VpCount(p) => params::vp_count(
                area(&mut areas, p.parameter_area_index)?,
                p.byte_offset,
                config,
            )?,
            IgvmDirectiveHeader::MemoryMap(p) => params::memory_map(
                area(&mut areas, p.parameter_area_index)?,
                p.byte_offset,
                &plan.memory,
            )?,
            IgvmDirectiveHeader::CommandLine(p) => params::command_line(
                area(&mut areas, p.parameter_area_index)?,
                p.byte_offset,
                config.cmdline.as_deref().unwrap_or(""),
            )?,
            IgvmDirectiveHeader::EnvironmentInfo(p) => params::environment_info(
                area(&mut areas, p.parameter_area_index)?,
                p.byte_offset,
                config.platform == Platform::None,
            )?,
            IgvmDirectiveHeader::Srat(_)
            | IgvmDirectiveHeader::Madt(_)
            | IgvmDirectiveHeader::Slit(_)
            | IgvmDirectiveHeader::Pptt(_)
            | IgvmDirectiveHeader::MmioRanges(_)
            | IgvmDirectiveHeader::DeviceTree(_) => {
                return Err(IgvmLoadError::Unsupported(format!(
                    "the {} parameter is not supported (Veil fills VP count, memory map, command \
                     line and environment info)",
                    directive_name(d)
                )));
            }
            IgvmDirectiveHeader::ParameterInsert(ins) if ins.compatibility_mask & mask != 0 => {
                let a = areas.remove(&ins.parameter_area_index).ok_or_else(|| {
                    IgvmLoadError::Unsupported(format!(
                        "parameter insert at {:#x} names unknown area {}",
                        ins.gpa, ins.parameter_area_index
                    ))
                })?;
                let size = (a.bytes.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
                push(
                    &mut plan,
                    PageImport {
                        gpa: ins.gpa,
                        size,
                        kind: PageKind::Unmeasured,
                        data: PageData::Bytes {
                            blob: Blob::from(a.bytes),
                            offset: 0,
                        },
                        label: format!("IGVM parameter area {}", ins.parameter_area_index),
                    },
                )?;
            }
            IgvmDirectiveHeader::RequiredMemory {
                gpa,
                compatibility_mask,
                number_of_bytes,
                ..
            } if compatibility_mask & mask != 0 => {
                check_in_memory("required memory", *gpa, u64::from(*number_of_bytes), config)?;
            }
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                compatibility_mask,
                vp_index,
                vmsa: v,
            } if compatibility_mask & mask != 0 => {
                if vmsa_state.is_some() {
                    return Err(IgvmLoadError::KvmVmsaRule(
                        "more than one VMSA; KVM takes a single VMSA, for vCPU 0".into(),
                    ));
                }
                if *vp_index != 0 {
                    return Err(IgvmLoadError::KvmVmsaRule(format!(
                        "VMSA for vCPU {vp_index}; KVM takes a single VMSA, for vCPU 0"
                    )));
                }
                if *gpa != SNP_VMSA_GPA {
                    return Err(IgvmLoadError::KvmVmsaRule(format!(
                        "VMSA at GPA {gpa:#x}; KVM places it at {SNP_VMSA_GPA:#x}"
                    )));
                }
                let mut page = [0u8; vmsa::VMSA_SIZE];
                let raw = v.as_bytes();
                let n = raw.len().min(page.len());
                page[..n].copy_from_slice(&raw[..n]);
                let (state, features) = vmsa::parse(&page);
                let rebuilt = vmsa::build(&state, features);
                if let Some(off) = page.iter().zip(rebuilt.iter()).position(|(a, b)| a != b) {
                    return Err(IgvmLoadError::KvmVmsaRule(format!(
                        "byte {off:#x} of the VMSA is set, but KVM builds the VMSA from register \
                         state and cannot reproduce that field"
                    )));
                }
                if ![0x10, 0x11, 0x30, 0x31].contains(&state.cr0) {
                    return Err(IgvmLoadError::KvmVmsaRule(format!(
                        "CR0 is {:#x}; KVM accepts 0x10, 0x11, 0x30 or 0x31 at launch",
                        state.cr0
                    )));
                }
                plan.sev_features = features;
                vmsa_state = Some(state);
            }
            IgvmDirectiveHeader::SnpIdBlock {
                compatibility_mask,
                author_key_enabled,
                ld,
                family_id,
                image_id,
                version,
                guest_svn,
                id_key_algorithm,
                author_key_algorithm,
                id_key_signature,
                id_public_key,
                author_key_signature,
                author_public_key,
                ..
            } if compatibility_mask & mask != 0 => {
                if plan.id_block.is_some() {
                    return Err(IgvmLoadError::Unsupported(
                        "two SNP ID blocks; exactly one is allowed".into(),
                    ));
                }
                let policy = plan.policy.unwrap_or(0x30000);
                let mut block = Vec::with_capacity(0x60);
                block.extend_from_slice(ld);
                block.extend_from_slice(family_id);
                block.extend_from_slice(image_id);
                block.extend_from_slice(&version.to_le_bytes());
                block.extend_from_slice(&guest_svn.to_le_bytes());
                block.extend_from_slice(&policy.to_le_bytes());
                let mut auth = vec![0u8; ID_AUTH_SIZE];
                auth[0..4].copy_from_slice(&id_key_algorithm.to_le_bytes());
                auth[4..8].copy_from_slice(&author_key_algorithm.to_le_bytes());
                put_sig(&mut auth[0x40..], id_key_signature);
                put_key(&mut auth[0x240..0x240 + PUBKEY_SIZE], id_public_key);
                put_sig(&mut auth[0x680..], author_key_signature);
                put_key(&mut auth[0x880..0x880 + PUBKEY_SIZE], author_public_key);
                plan.id_block = Some(IdBlockPair {
                    id_block: block,
                    id_auth: auth,
                    author_key_enabled: *author_key_enabled != 0,
                });
            }
            IgvmDirectiveHeader::X64NativeVpContext {
                compatibility_mask,
                vp_index,
                context,
            } if compatibility_mask & mask != 0 => {
                if config.platform != Platform::None {
                    return Err(IgvmLoadError::Unsupported(format!(
                        "a native VP context on {}: KVM starts {} vCPUs in their architectural \
                         reset state and does not take register state from the VMM",
                        config.platform, config.platform
                    )));
                }
                if *vp_index != 0 || native_state.is_some() {
                    return Err(IgvmLoadError::Unsupported(format!(
                        "native VP context for vCPU {vp_index}: only one, for vCPU 0, is supported"
                    )));
                }
                let high = [
                    context.r8,
                    context.r9,
                    context.r10,
                    context.r11,
                    context.r12,
                    context.r13,
                    context.r14,
                    context.r15,
                ];
                if high.iter().any(|r| *r != 0) {
                    return Err(IgvmLoadError::Unsupported(
                        "native VP context sets r8-r15, which Veil's initial vCPU state does not carry"
                            .into(),
                    ));
                }
                native_state = Some(native_vcpu(context, config.cpu_signature));
            }
            _ => {}
        }
    }

    let sig = config.cpu_signature;
    match config.platform {
        Platform::SevSnp => {
            plan.vcpus
                .push(vmsa_state.unwrap_or_else(|| VcpuState::reset(BSP_RESET_EIP, sig)));
            let ap_eip = ovmf_ap_reset_eip(&plan).unwrap_or(BSP_RESET_EIP);
            for _ in 1..config.cpus {
                plan.vcpus.push(VcpuState::reset(ap_eip, sig));
            }
        }
        Platform::Tdx | Platform::None => {
            plan.vcpus = (0..config.cpus)
                .map(|_| VcpuState::reset(BSP_RESET_EIP, sig))
                .collect();
            if let Some(bsp) = native_state {
                plan.vcpus[0] = bsp;
            }
        }
    }
    Ok(plan)
}

/// The state a native VP context asks for: flat code and data segments, the given control
/// registers and general registers.
fn native_vcpu(c: &igvm_defs::IgvmNativeVpContextX64, cpu_signature: u32) -> VcpuState {
    let mut s = VcpuState::reset(BSP_RESET_EIP, cpu_signature);
    let data = crate::plan::Segment {
        selector: c.data_selector,
        attrib: c.data_attributes,
        limit: c.data_limit,
        base: u64::from(c.data_base),
    };
    s.cs = crate::plan::Segment {
        selector: c.code_selector,
        attrib: c.code_attributes,
        limit: c.code_limit,
        base: u64::from(c.code_base),
    };
    (s.ds, s.es, s.ss, s.fs) = (data, data, data, data);
    s.gs = crate::plan::Segment {
        base: c.gs_base,
        ..data
    };
    s.gdtr.base = c.gdtr_base;
    s.gdtr.limit = u32::from(c.gdtr_limit);
    s.idtr.base = c.idtr_base;
    s.idtr.limit = u32::from(c.idtr_limit);
    (s.cr0, s.cr3, s.cr4, s.efer) = (c.cr0, c.cr3, c.cr4, c.efer);
    (s.rax, s.rbx, s.rcx, s.rdx) = (c.rax, c.rbx, c.rcx, c.rdx);
    (s.rsi, s.rdi, s.rsp, s.rbp) = (c.rsi, c.rdi, c.rsp, c.rbp);
    (s.rip, s.rflags) = (c.rip, c.rflags);
    s
}

/// Bytes of firmware searched for an OVMF footer table, just below 4 GiB.
const FOOTER_WINDOW: u64 = 64 << 10;

/// The SEV-ES AP reset address from an OVMF footer table in the pages just below 4 GiB, when
/// the file maps OVMF there (as `veil igvm build` does): the APs of an OVMF guest must start
/// at its reset block, exactly as when the same OVMF is launched directly.
fn ovmf_ap_reset_eip(plan: &LaunchPlan) -> Option<u32> {
    let top = 1u64 << 32;
    let base = top - FOOTER_WINDOW;
    let mut window = vec![0u8; FOOTER_WINDOW as usize];
    let mut page = [0u8; PAGE_SIZE as usize];
    for imp in &plan.imports {
        for i in 0..imp.pages() {
            let gpa = imp.gpa + i * PAGE_SIZE;
            if gpa < base || gpa >= top {
                continue;
            }
            imp.page_into(i, &mut page);
            let at = (gpa - base) as usize;
            window[at..at + PAGE_SIZE as usize].copy_from_slice(&page);
        }
    }
    let entries = footer::parse(&window).ok()??;
    let entry = entries
        .iter()
        .find(|e| e.guid == sev::SEV_ES_RESET_BLOCK_GUID)?;
    Some(u32::from_le_bytes(entry.data.get(..4)?.try_into().ok()?))
}

fn area(areas: &mut BTreeMap<u32, Area>, index: u32) -> Result<&mut Area, IgvmLoadError> {
    areas.get_mut(&index).ok_or_else(|| {
        IgvmLoadError::Unsupported(format!("a parameter names unknown area {index}"))
    })
}

fn put_sig(out: &mut [u8], s: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE) {
    out[..72].copy_from_slice(&s.r_comp);
    out[72..144].copy_from_slice(&s.s_comp);
}

fn put_key(out: &mut [u8], k: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY) {
    out[..4].copy_from_slice(&k.curve.to_le_bytes());
    out[4..76].copy_from_slice(&k.qx);
    out[76..148].copy_from_slice(&k.qy);
}

fn directive_mask(d: &IgvmDirectiveHeader) -> Option<u32> {
    match d {
        IgvmDirectiveHeader::PageData {
            compatibility_mask, ..
        }
        | IgvmDirectiveHeader::RequiredMemory {
            compatibility_mask, ..
        }
        | IgvmDirectiveHeader::SnpVpContext {
            compatibility_mask, ..
        }
        | IgvmDirectiveHeader::X64NativeVpContext {
            compatibility_mask, ..
        } => Some(*compatibility_mask),
        IgvmDirectiveHeader::ParameterInsert(i) => Some(i.compatibility_mask),
        _ => None,
    }
}

fn directive_name(d: &IgvmDirectiveHeader) -> &'static str {
    match d {
        IgvmDirectiveHeader::PageData { .. } => "PAGE_DATA",
        IgvmDirectiveHeader::ParameterArea { .. } => "PARAMETER_AREA",
        IgvmDirectiveHeader::VpCount(_) => "VP_COUNT",
        IgvmDirectiveHeader::EnvironmentInfo(_) => "ENVIRONMENT_INFO",
        IgvmDirectiveHeader::Srat(_) => "SRAT",
        IgvmDirectiveHeader::Madt(_) => "MADT",
        IgvmDirectiveHeader::Slit(_) => "SLIT",
        IgvmDirectiveHeader::Pptt(_) => "PPTT",
        IgvmDirectiveHeader::MmioRanges(_) => "MMIO_RANGES",
        IgvmDirectiveHeader::MemoryMap(_) => "MEMORY_MAP",
        IgvmDirectiveHeader::CommandLine(_) => "COMMAND_LINE",
        IgvmDirectiveHeader::DeviceTree(_) => "DEVICE_TREE",
        IgvmDirectiveHeader::RequiredMemory { .. } => "REQUIRED_MEMORY",
        IgvmDirectiveHeader::SnpVpContext { .. } => "VP_CONTEXT (SNP)",
        IgvmDirectiveHeader::X64NativeVpContext { .. } => "VP_CONTEXT (native)",
        IgvmDirectiveHeader::ParameterInsert(_) => "PARAMETER_INSERT",
        IgvmDirectiveHeader::ErrorRange { .. } => "ERROR_RANGE",
        IgvmDirectiveHeader::SnpIdBlock { .. } => "SNP_ID_BLOCK",
        _ => "VBS/CCA directive",
    }
}
