//! A software model of SEV-SNP launch under KVM: it accepts the same commands as the real
//! platform, enforces the launch rules KVM and the SNP firmware enforce, and computes the launch
//! digest the firmware would, from the pages and vCPU registers that cross the interface.
//!
//! The model is a checking tool (`veil run --dry-run`) and a test oracle; it never launches a
//! guest. Digest: PAGE_INFO chaining of the SNP firmware ABI (each page: SHA-384 over the
//! previous digest, the page's contents digest, length 0x70, page type, GPA), then one VMSA per
//! vCPU at `LAUNCH_FINISH`, built from the registers the way KVM builds it.

use kvm_bindings::kvm_cpuid_entry2;
use sha2::{Digest, Sha384};

use super::{Init2, LaunchFinish, LaunchStart, SnpPlatform, model_vmsa};

mod checks;
mod config;

use crate::model_memory::{
    ModelMemory, RangeSet, check_aligned, check_source, pages_this_call, partial_note,
    private_memory_from,
};
use crate::platform::{CommandError, PrivateMemory, Rule};
use crate::regs::VcpuRegisters;
use crate::sys::snp::{self as sys, page_type};
pub use config::{SnpModelConfig, epyc_cpuid};
use veil_firmware::plan::{PAGE_SIZE, SNP_VMSA_GPA};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Initialised,
    Started,
    Finished,
}

/// The SEV-SNP platform model.
#[derive(Debug)]
pub struct SnpModel {
    config: SnpModelConfig,
    state: State,
    mem: ModelMemory,
    vmsa_features: u64,
    policy: u64,
    launched: RangeSet,
    regs: Vec<(u32, VcpuRegisters)>,
    digest: [u8; 48],
    updates: u32,
    host_data: [u8; 32],
    pages_measured: u64,
}

impl SnpModel {
    /// A freshly created SNP VM (`KVM_CREATE_VM(KVM_X86_SNP_VM)`, `/dev/sev` opened).
    pub fn new(config: SnpModelConfig) -> Self {
        let mut mem = ModelMemory::default();
        mem.log
            .push("open /dev/sev; KVM_CREATE_VM type=4 (KVM_X86_SNP_VM)".to_string());
        SnpModel {
            config,
            state: State::Created,
            mem,
            vmsa_features: 0,
            policy: 0,
            launched: RangeSet::default(),
            regs: Vec::new(),
            digest: [0; 48],
            updates: 0,
            host_data: [0; 32],
            pages_measured: 0,
        }
    }

    /// The launch digest, once `SNP_LAUNCH_FINISH` succeeded.
    pub fn launch_digest(&self) -> Option<[u8; 48]> {
        (self.state == State::Finished).then_some(self.digest)
    }

    /// The policy given to `SNP_LAUNCH_START`.
    pub fn policy(&self) -> u64 {
        self.policy
    }

    /// The host data given to `SNP_LAUNCH_FINISH`.
    pub fn host_data(&self) -> [u8; 32] {
        self.host_data
    }

    /// Pages chained into the digest so far (VMSAs included).
    pub fn pages_measured(&self) -> u64 {
        self.pages_measured
    }

    /// Every command that crossed the interface.
    pub fn log(&self) -> &[String] {
        &self.mem.log
    }

    /// The shared memory state (slots, private ranges, discards).
    pub fn memory(&self) -> &ModelMemory {
        &self.mem
    }

    fn chain(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[0x00..0x30].copy_from_slice(&self.digest);
        info[0x30..0x60].copy_from_slice(contents);
        info[0x60..0x62].copy_from_slice(&0x70u16.to_le_bytes());
        info[0x62] = page_type;
        // IMI_PAGE (0x63) and the VMPL permissions (0x64..0x67) are zero under KVM.
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.digest.copy_from_slice(&Sha384::digest(info));
        self.pages_measured += 1;
    }

    fn require(&self, command: &'static str, want: State) -> Result<(), CommandError> {
        if self.state == want {
            return Ok(());
        }
        let (rule, what) = match self.state {
            State::Finished => (
                Rule::AfterFinish,
                "the launch is already finished".to_string(),
            ),
            s => (
                Rule::Order,
                format!("the VM is in state {s:?}, {command} needs {want:?}"),
            ),
        };
        Err(CommandError::rule(command, libc::EINVAL, rule, what))
    }
}

impl PrivateMemory for SnpModel {
    private_memory_from!(mem);

    fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError> {
        // KVM takes later vCPUs too; they simply have no VMSA in the launch digest.
        self.mem.create_vcpu(id)
    }
}

impl SnpPlatform for SnpModel {
    fn init2(&mut self, init: &Init2) -> Result<(), CommandError> {
        const CMD: &str = "KVM_SEV_INIT2";
        self.require(CMD, State::Created)?;
        let unsupported = init.vmsa_features & !self.config.supported_vmsa_features;
        if unsupported != 0 {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Unsupported,
                format!(
                    "vmsa_features {:#x} has bits {unsupported:#x} KVM does not offer (supported \
                     {:#x}; SNP_ACTIVE is added by KVM, not passed)",
                    init.vmsa_features, self.config.supported_vmsa_features
                ),
            ));
        }
        if init.ghcb_version > sys::GHCB_VERSION {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Unsupported,
                format!("GHCB version {} > 2", init.ghcb_version),
            ));
        }
        self.vmsa_features = init.vmsa_features;
        self.state = State::Initialised;
        self.mem.log.push(format!(
            "KVM_SEV_INIT2 vmsa_features={:#x} ghcb_version={} flags=0",
            init.vmsa_features, init.ghcb_version
        ));
        Ok(())
    }

    fn enable_split_irqchip(&mut self, ioapic_pins: u32) -> Result<(), CommandError> {
        // KVM creates each vCPU's local APIC with the vCPU: the irqchip mode comes first.
        if !self.mem.vcpus.is_empty() {
            return Err(CommandError::rule(
                "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)",
                libc::EINVAL,
                Rule::Order,
                "vCPUs exist already",
            ));
        }
        self.mem.log.push(format!(
            "KVM_ENABLE_CAP KVM_CAP_SPLIT_IRQCHIP args[0]={ioapic_pins}"
        ));
        Ok(())
    }

    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError> {
        Ok(self.mem.supported_cpuid(&self.config.supported_cpuid))
    }

    fn launch_start(&mut self, start: &LaunchStart) -> Result<(), CommandError> {
        const CMD: &str = "SNP_LAUNCH_START";
        self.require(CMD, State::Initialised)?;
        let p = start.policy;
        if p & !sys::POLICY_VALID != 0 || p & sys::POLICY_RSVD_MBO == 0 {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Unsupported,
                format!(
                    "policy {p:#x}: bit 17 must be set and only bits {:#x} may be",
                    sys::POLICY_VALID
                ),
            ));
        }
        let (major, minor) = (((p >> 8) & 0xff) as u8, (p & 0xff) as u8);
        if (major, minor) > self.config.api_version {
            return Err(CommandError::rule(
                CMD,
                libc::EIO,
                Rule::Unsupported,
                format!(
                    "policy asks for firmware API {major}.{minor}, the (modelled) firmware is {}.{}",
                    self.config.api_version.0, self.config.api_version.1
                ),
            )
            .with_fw(u64::from(sys::SEV_RET_POLICY_FAILURE)));
        }
        self.policy = p;
        self.state = State::Started;
        self.mem
            .log
            .push(format!("SNP_LAUNCH_START policy={p:#x} flags=0"));
        Ok(())
    }

    fn launch_update(
        &mut self,
        gfn: u64,
        src: Option<&mut [u8]>,
        pages: u64,
        ptype: u8,
    ) -> Result<u64, CommandError> {
        const CMD: &str = "SNP_LAUNCH_UPDATE";
        self.require(CMD, State::Started)?;
        let gpa = gfn.checked_mul(PAGE_SIZE).ok_or_else(|| {
            CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::Alignment,
                format!("gfn {gfn:#x} overflows"),
            )
        })?;
        let len = pages.saturating_mul(PAGE_SIZE);
        check_aligned(CMD, gpa, len)?;
        match ptype {
            page_type::VMSA => {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::VmsaFromUserspace,
                    "page type VMSA: KVM creates the VMSAs at SNP_LAUNCH_FINISH",
                ));
            }
            page_type::NORMAL
            | page_type::ZERO
            | page_type::UNMEASURED
            | page_type::SECRETS
            | page_type::CPUID => {}
            t => {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::Unsupported,
                    format!("unknown page type {t}"),
                ));
            }
        }
        let mut src = match src {
            Some(s) => {
                check_source(CMD, s, len)?;
                Some(s)
            }
            None if ptype == page_type::ZERO => None,
            None => {
                return Err(CommandError::rule(
                    CMD,
                    libc::EFAULT,
                    Rule::Alignment,
                    format!("page type {} needs source pages", page_type::name(ptype)),
                ));
            }
        };
        self.mem.check_private(CMD, gpa, len)?;
        if self.launched.contains_any(gpa, gpa + len) {
            return Err(CommandError::rule(
                CMD,
                libc::EEXIST,
                Rule::PageTwice,
                format!("a page in {gpa:#x}+{len:#x} was already launched"),
            ));
        }
        self.updates += 1;
        if let Some(n) = self.config.eagain_every {
            if n > 0 && self.updates % n == 0 {
                self.mem.log.push(format!(
                    "SNP_LAUNCH_UPDATE gfn={gfn:#x} pages={pages} type={} -> EAGAIN",
                    page_type::name(ptype)
                ));
                return Err(CommandError::new(
                    CMD,
                    libc::EAGAIN,
                    "the kernel asked to retry",
                ));
            }
        }
        let todo = pages_this_call(self.config.max_pages_per_update, pages);
        if ptype == page_type::CPUID {
            let src = src
                .as_deref_mut()
                .expect("checked above: CPUID pages have a source");
            for i in 0..todo as usize {
                let page = &mut src[i * PAGE_SIZE as usize..(i + 1) * PAGE_SIZE as usize];
                if let Err((fixed, why)) = self.check_cpuid_page(page) {
                    page.copy_from_slice(&fixed);
                    self.mem.log.push(format!(
                        "SNP_LAUNCH_UPDATE gfn={gfn:#x} pages={pages} type=CPUID -> EIO, \
                         firmware INVALID_PARAM, corrected page written back"
                    ));
                    return Err(CommandError::rule(
                        CMD,
                        libc::EIO,
                        Rule::CpuidPage,
                        format!("the firmware rejected the CPUID page: {why}"),
                    )
                    .with_fw(u64::from(sys::SEV_RET_INVALID_PARAM)));
                }
            }
        }
        let src: Option<&[u8]> = src.as_deref();
        for i in 0..todo {
            let contents: [u8; 48] = match (ptype, src) {
                (page_type::NORMAL, Some(s)) => {
                    let page = &s[(i * PAGE_SIZE) as usize..((i + 1) * PAGE_SIZE) as usize];
                    Sha384::digest(page).into()
                }
                _ => [0; 48],
            };
            self.chain(ptype, gpa + i * PAGE_SIZE, &contents);
        }
        self.launched.insert(gpa, gpa + todo * PAGE_SIZE);
        self.mem.log.push(format!(
            "SNP_LAUNCH_UPDATE gfn={gfn:#x} pages={pages} type={}{}",
            page_type::name(ptype),
            partial_note(todo, pages)
        ));
        Ok(todo)
    }

    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError> {
        self.mem.set_vcpu_cpuid(id, cpuid)
    }

    fn set_vcpu_registers(&mut self, id: u32, regs: &VcpuRegisters) -> Result<(), CommandError> {
        const CMD: &str = "KVM_SET_REGS";
        if self.state == State::Finished {
            return Err(CommandError::rule(
                CMD,
                libc::EINVAL,
                Rule::AfterFinish,
                "the vCPU state is encrypted after SNP_LAUNCH_FINISH",
            ));
        }
        self.mem.require_vcpu(CMD, id)?;
        self.regs.retain(|(v, _)| *v != id);
        self.regs.push((id, regs.clone()));
        self.mem.log.push(format!(
            "KVM_SET_REGS/SREGS/FPU/XCRS/DEBUGREGS/MSRS vcpu={id} cs={:#x}:{:#x} rip={:#x} \
             rdx={:#x}",
            regs.sregs.cs.selector, regs.sregs.cs.base, regs.regs.rip, regs.regs.rdx
        ));
        Ok(())
    }

    fn launch_finish(&mut self, finish: &LaunchFinish<'_>) -> Result<(), CommandError> {
        const CMD: &str = "SNP_LAUNCH_FINISH";
        self.require(CMD, State::Started)?;
        if let Some(b) = finish.id_block {
            let auth = finish.id_auth.map_or(0, <[u8]>::len);
            if b.len() != 96 || auth != 4096 {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::Unsupported,
                    format!(
                        "ID block of {} bytes and auth of {auth}: need 96 and 4096",
                        b.len()
                    ),
                ));
            }
        }
        // KVM syncs each vCPU's VMSA in creation order; it refuses a DR7 beyond its fixed bits.
        let mut vmsas = Vec::new();
        for id in self.mem.vcpus.clone() {
            let regs = self
                .regs
                .iter()
                .find(|(v, _)| *v == id)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            if regs.dr7 & !model_vmsa::DR7_FIXED_1 != 0 {
                return Err(CommandError::rule(
                    CMD,
                    libc::EINVAL,
                    Rule::VcpuState,
                    format!(
                        "vCPU {id} has DR7 {:#x}: KVM will not encrypt a VMSA with breakpoints",
                        regs.dr7
                    ),
                ));
            }
            vmsas.push(model_vmsa::build(&regs, self.vmsa_features));
        }
        let (saved_digest, saved_count) = (self.digest, self.pages_measured);
        for v in &vmsas {
            let h: [u8; 48] = Sha384::digest(&v[..]).into();
            self.chain(page_type::VMSA, SNP_VMSA_GPA, &h);
        }
        if let (Some(block), Some(auth)) = (finish.id_block, finish.id_auth) {
            if let Err(e) = self.check_id_block(block, auth) {
                // The firmware leaves the guest in its launch state: the VMSAs are not measured.
                self.digest = saved_digest;
                self.pages_measured = saved_count;
                return Err(e);
            }
        }
        self.host_data = finish.host_data;
        self.state = State::Finished;
        self.mem.log.push(format!(
            "SNP_LAUNCH_FINISH id_block_en={} auth_key_en={} host_data={} ({} VMSAs measured)",
            u8::from(finish.id_block.is_some()),
            u8::from(finish.author_key),
            hex(&finish.host_data),
            vmsas.len()
        ));
        Ok(())
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
