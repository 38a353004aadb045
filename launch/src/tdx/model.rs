//! A software model of TDX launch under KVM: the commands of [`TdxPlatform`], the rules KVM and
//! the TDX module enforce, and MRTD as the module builds it from TDH.MEM.PAGE.ADD and
//! TDH.MR.EXTEND (one running SHA-384; per page a 128-byte "MEM.PAGE.ADD" block with the GPA at
//! byte 16, then for measured pages sixteen 128-byte "MR.EXTEND" blocks each followed by 256
//! bytes of the page).

use kvm_bindings::kvm_cpuid_entry2;
use sha2::{Digest, Sha384};

use super::{CapabilitiesReply, InitVm, TdxCapabilities, TdxPlatform};
use crate::model_memory::{
    ModelMemory, RangeSet, check_aligned, check_source, pages_this_call, partial_note,
    private_memory_from,
};
use crate::platform::{CommandError, PrivateMemory, Rule};
use crate::sys::tdx::{self as sys};
use veil_firmware::plan::PAGE_SIZE;

/// The modelled platform's settings.
#[derive(Debug, Clone)]
pub struct TdxModelConfig {
    /// What `KVM_TDX_CAPABILITIES` reports.
    pub caps: TdxCapabilities,
    /// What `KVM_GET_SUPPORTED_CPUID` returns.
    pub supported_cpuid: Vec<kvm_cpuid_entry2>,
    /// Fail the first n `INIT_VM` calls with `-EAGAIN`.
    pub init_vm_eagain: u32,
    /// Add at most this many pages per `INIT_MEM_REGION`.
    pub max_pages_per_call: Option<u64>,
}

fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: if function == 7 || function == 0xd {
            kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: r[0],
        ebx: r[1],
        ecx: r[2],
        edx: r[3],
        ..Default::default()
    }
}

impl Default for TdxModelConfig {
    fn default() -> Self {
        TdxModelConfig {
            caps: TdxCapabilities {
                // DEBUG, SEPT_VE_DISABLE, PKS, PERFMON (a TDX 1.5 module's usual set).
                supported_attrs: sys::TD_ATTR_DEBUG
                    | sys::TD_ATTR_SEPT_VE_DISABLE
                    | (1 << 30)
                    | (1 << 63),
                supported_xfam: 0x6_02ff,
                user_tdvmcallinfo_1_r11: 0,
                user_tdvmcallinfo_1_r12: 0,
                cpuid: vec![
                    entry(0x1, 0, [0x0fff_3fff, 0xffff_0000, 0xf7ff_fffe, 0xffff_ffff]),
                    entry(0x7, 0, [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]),
                    entry(0xd, 1, [0xf, 0, 0, 0]),
                    entry(0x8000_0008, 0, [0xffff, 0, 0, 0]),
                ],
            },
            supported_cpuid: vec![
                entry(0x0, 0, [0x20, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
                entry(0x1, 0, [0x0008_06f8, 0x0010_0800, 0xf7fa_3223, 0x0f8b_fbff]),
                entry(0x7, 0, [0x2, 0xf3bf_bfbf, 0x1b41_5f6e, 0xbc18_4410]),
                entry(0xd, 1, [0xf, 0, 0, 0]),
                entry(0x8000_0008, 0, [0x3934, 0, 0, 0]),
            ],
            init_vm_eagain: 0,
            max_pages_per_call: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Initialised,
    Finalized,
}

/// The TDX platform model.
#[derive(Debug)]
pub struct TdxModel {
    config: TdxModelConfig,
    state: State,
    mem: ModelMemory,
    init_vm_calls: u32,
    vcpus_initialised: Vec<u32>,
    added: RangeSet,
    mrtd: Sha384,
    attributes: u64,
    xfam: u64,
    pages_added: u64,
    pages_extended: u64,
}

fn block(tag: &[u8], gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..tag.len()].copy_from_slice(tag);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

impl TdxModel {
    /// A freshly created TD (`KVM_CREATE_VM(KVM_X86_TDX_VM)`).
    pub fn new(config: TdxModelConfig) -> Self {
        let mut mem = ModelMemory::default();
        mem.log.push("KVM_CREATE_VM type=5 (KVM_X86_TDX_VM)".into());
        mem.log
            .push("KVM_ENABLE_CAP KVM_CAP_SPLIT_IRQCHIP args[0]=24".into());
        TdxModel {
            config,
            state: State::Created,
            mem,
            init_vm_calls: 0,
            vcpus_initialised: Vec::new(),
            added: RangeSet::default(),
            mrtd: Sha384::new(),
            attributes: 0,
            xfam: 0,
            pages_added: 0,
            pages_extended: 0,
        }
    }

    /// MRTD, once `KVM_TDX_FINALIZE_VM` succeeded.
    pub fn mrtd(&self) -> Option<[u8; 48]> {
        (self.state == State::Finalized).then(|| self.mrtd.clone().finalize().into())
    }

    /// Every command that crossed the interface.
    pub fn log(&self) -> &[String] {
        &self.mem.log
    }

    /// The shared memory state.
    pub fn memory(&self) -> &ModelMemory {
        &self.mem
    }

    /// (pages added, pages measured).
    pub fn page_counts(&self) -> (u64, u64) {
        (self.pages_added, self.pages_extended)
    }

    fn not_finalized(&self, command: &'static str) -> Result<(), CommandError> {
        if self.state == State::Finalized {
            return Err(CommandError::rule(
                command,
                libc::EINVAL,
                Rule::AfterFinish,
                "the TD is finalized (KVM_TDX_FINALIZE_VM came already)",
            ));
        }
        Ok(())
    }

    fn initialised(&self, command: &'static str) -> Result<(), CommandError> {
        self.not_finalized(command)?;
        if self.state != State::Initialised {
            return Err(CommandError::rule(
                command,
                libc::EINVAL,
                Rule::Order,
                "KVM_TDX_INIT_VM has not been done",
            ));
        }
        Ok(())
    }
}

impl PrivateMemory for TdxModel {
    private_memory_from!(mem);

    fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError> {
        const CMD: &str = "KVM_CREATE_VCPU";
        self.not_finalized(CMD)?;
        if self.state != State::Initialised {
            return Err(CommandError::rule(
                CMD,
                libc::EIO,
                Rule::InitVmBeforeVcpus,
                "TDX vCPUs can only be created after KVM_TDX_INIT_VM",
            ));
        }
        self.mem.create_vcpu(id)
    }
}

impl TdxPlatform for TdxModel {
    fn capabilities(&mut self, room: u32) -> Result<CapabilitiesReply, CommandError> {
        let needed = self.config.caps.cpuid.len() as u32;
        if room < needed {
            self.mem.log.push(format!(
                "KVM_TDX_CAPABILITIES cpuid.nent={room} -> E2BIG (needs {needed})"
            ));
            return Ok(CapabilitiesReply::TooSmall { needed });
        }
        self.mem
            .log
            .push(format!("KVM_TDX_CAPABILITIES cpuid.nent={room}"));
        Ok(CapabilitiesReply::Caps(self.config.caps.clone()))
    }

    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError> {
        Ok(self.mem.supported_cpuid(&self.config.supported_cpuid))
    }

    fn init_vm(&mut self, init: &InitVm) -> Result<(), CommandError> {
        const CMD: &str = "KVM_TDX_INIT_VM";
        self.not_finalized(CMD)?;
        if self.state != State::Created || !self.mem.vcpus.is_empty() {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::InitVmBeforeVcpus,
                "KVM_TDX_INIT_VM comes once, before any vCPU is created",
            ));
        }
        let caps = &self.config.caps;
        let bad_attrs = init.attributes & !caps.supported_attrs;
        let bad_xfam = init.xfam & !caps.supported_xfam;
        if bad_attrs != 0 || bad_xfam != 0 || init.xfam & sys::XFAM_FIXED1 != sys::XFAM_FIXED1 {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Unsupported,
                format!(
                    "attributes {:#x} (unsupported bits {bad_attrs:#x}) / xfam {:#x} (unsupported \
                     bits {bad_xfam:#x}; x87 and SSE are required)",
                    init.attributes, init.xfam
                ),
            ));
        }
        for e in &init.cpuid {
            let Some(c) = caps
                .cpuid
                .iter()
                .find(|c| c.function == e.function && c.index == e.index)
            else {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::Unsupported,
                    format!(
                        "CPUID leaf {:#x}.{:#x} is not configurable",
                        e.function, e.index
                    ),
                ));
            };
            let extra = [
                e.eax & !c.eax,
                e.ebx & !c.ebx,
                e.ecx & !c.ecx,
                e.edx & !c.edx,
            ];
            if extra.iter().any(|x| *x != 0) {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::Unsupported,
                    format!(
                        "CPUID leaf {:#x}.{:#x} sets bits that are not configurable: \
                         {extra:#x?}",
                        e.function, e.index
                    ),
                ));
            }
        }
        self.init_vm_calls += 1;
        if self.init_vm_calls <= self.config.init_vm_eagain {
            self.mem.log.push(format!("{CMD} -> EAGAIN"));
            return Err(CommandError::new(
                CMD,
                libc::EAGAIN,
                "the TDX module is busy, retry",
            ));
        }
        self.attributes = init.attributes;
        self.xfam = init.xfam;
        self.state = State::Initialised;
        self.mem.log.push(format!(
            "{CMD} attributes={:#x} xfam={:#x} cpuid.nent={} mrconfigid={} mrowner={} \
             mrownerconfig={}",
            init.attributes,
            init.xfam,
            init.cpuid.len(),
            crate::snp::model::hex(&init.mrconfigid),
            crate::snp::model::hex(&init.mrowner),
            crate::snp::model::hex(&init.mrownerconfig)
        ));
        Ok(())
    }

    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError> {
        self.not_finalized("KVM_SET_CPUID2")?;
        self.mem.set_vcpu_cpuid(id, cpuid)
    }

    fn init_vcpu(&mut self, id: u32, hob_gpa: u64) -> Result<(), CommandError> {
        const CMD: &str = "KVM_TDX_INIT_VCPU";
        self.initialised(CMD)?;
        self.mem.require_vcpu(CMD, id)?;
        if self.vcpus_initialised.contains(&id) {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Order,
                format!("vCPU {id} is initialised already"),
            ));
        }
        self.vcpus_initialised.push(id);
        self.mem
            .log
            .push(format!("{CMD} vcpu={id} data(TD HOB GPA)={hob_gpa:#x}"));
        Ok(())
    }

    fn init_mem_region(
        &mut self,
        vcpu: u32,
        src: &[u8],
        gpa: u64,
        pages: u64,
        measure: bool,
    ) -> Result<u64, CommandError> {
        const CMD: &str = "KVM_TDX_INIT_MEM_REGION";
        self.initialised(CMD)?;
        if !self.vcpus_initialised.contains(&vcpu) {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Order,
                format!("vCPU {vcpu} has not had KVM_TDX_INIT_VCPU"),
            ));
        }
        let len = pages.saturating_mul(PAGE_SIZE);
        let end = check_aligned(CMD, gpa, len)?;
        check_source(CMD, src, len)?;
        self.mem.check_private(CMD, gpa, len)?;
        if self.added.contains_any(gpa, end) {
            return Err(CommandError::rule(
                CMD,
                libc::EIO,
                Rule::PageTwice,
                format!("a page in {gpa:#x}+{len:#x} was already added (TDH.MEM.PAGE.ADD)"),
            ));
        }
        let todo = pages_this_call(self.config.max_pages_per_call, pages);
        for i in 0..todo {
            let page_gpa = gpa + i * PAGE_SIZE;
            self.mrtd.update(block(b"MEM.PAGE.ADD", page_gpa));
            self.pages_added += 1;
            if measure {
                let page = &src[(i * PAGE_SIZE) as usize..((i + 1) * PAGE_SIZE) as usize];
                for (c, chunk) in page.chunks(256).enumerate() {
                    self.mrtd
                        .update(block(b"MR.EXTEND", page_gpa + (c as u64) * 256));
                    self.mrtd.update(chunk);
                }
                self.pages_extended += 1;
            }
        }
        self.added.insert(gpa, gpa + todo * PAGE_SIZE);
        self.mem.log.push(format!(
            "{CMD} vcpu={vcpu} gpa={gpa:#x} nr_pages={pages} flags={}{}",
            if measure { "MEASURE" } else { "0" },
            partial_note(todo, pages)
        ));
        Ok(todo)
    }

    fn finalize(&mut self) -> Result<(), CommandError> {
        const CMD: &str = "KVM_TDX_FINALIZE_VM";
        self.initialised(CMD)?;
        self.state = State::Finalized;
        self.mem.log.push(format!(
            "{CMD} ({} pages added, {} measured)",
            self.pages_added, self.pages_extended
        ));
        Ok(())
    }
}
