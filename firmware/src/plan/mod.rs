//! The launch plan: what a payload asks the platform to load, in order, and how the vCPUs start.
//!
//! A payload (OVMF image, IGVM file, Linux kernel) is turned into one [`LaunchPlan`]. Two readers
//! consume it: [`crate::measure`] computes the digest offline, and the launch backends replay the
//! same imports into KVM (`SNP_LAUNCH_UPDATE`, `KVM_TDX_INIT_MEM_REGION`, or plain memory writes).
//! Because both read the same list, the expected measurement and the launch cannot drift apart.
//! Nothing here depends on KVM.

mod blob;
mod mapped;

pub use blob::Blob;

/// Size of the pages the plan is made of.
pub const PAGE_SIZE: u64 = 4096;

/// GPA at which KVM places (and the SNP firmware measures) every VMSA page.
pub const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// The confidential platform a plan is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// No memory encryption: plain KVM guest.
    None,
    /// AMD SEV-SNP.
    SevSnp,
    /// Intel TDX.
    Tdx,
}

impl Platform {
    /// Every platform, in the order reports list them.
    pub const ALL: [Platform; 3] = [Platform::None, Platform::SevSnp, Platform::Tdx];

    /// The spelling used on the command line (`none`, `sev-snp`, `tdx`).
    pub fn name(self) -> &'static str {
        match self {
            Platform::None => "none",
            Platform::SevSnp => "sev-snp",
            Platform::Tdx => "tdx",
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Platform::None),
            "sev-snp" | "snp" => Ok(Platform::SevSnp),
            "tdx" => Ok(Platform::Tdx),
            other => Err(format!(
                "unknown platform `{other}`: expected none, sev-snp or tdx"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a range of pages is imported; the platform's launch command decides what that means.
///
/// | kind | SEV-SNP `LAUNCH_UPDATE` type | TDX `INIT_MEM_REGION` | plain |
/// | --- | --- | --- | --- |
/// | `Normal` | NORMAL (contents measured) | PAGE.ADD + MR.EXTEND | copy |
/// | `Zero` | ZERO (measured as zero page) | PAGE.ADD + MR.EXTEND of zeros | nothing |
/// | `Unmeasured` | UNMEASURED | PAGE.ADD only | copy |
/// | `Secrets` | SECRETS | (not on TDX) | nothing |
/// | `Cpuid` | CPUID | (not on TDX) | nothing |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Data pages whose contents are measured.
    Normal,
    /// Zero-filled pages, measured as zero pages.
    Zero,
    /// Pages that are loaded (or zeroed) but not measured.
    Unmeasured,
    /// The SNP secrets page (filled by the firmware).
    Secrets,
    /// The SNP CPUID page. Its contents are not measured; the launch backend fills it with the
    /// guest's CPUID table (the SNP firmware checks it and corrects rejected entries).
    Cpuid,
}

impl PageKind {
    /// Lower-case name for traces and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PageKind::Normal => "normal",
            PageKind::Zero => "zero",
            PageKind::Unmeasured => "unmeasured",
            PageKind::Secrets => "secrets",
            PageKind::Cpuid => "cpuid",
        }
    }
}

/// Where the bytes of an import come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageData {
    /// All zeros.
    Zero,
    /// `blob[offset..]`; the import reads as many bytes as it covers, and bytes past the end of
    /// the blob read as zero (a file whose last page is partial).
    Bytes {
        /// The shared buffer (a whole file, say), never copied per page.
        blob: Blob,
        /// Where this import's first byte sits in `blob`.
        offset: usize,
    },
}

/// One ordered import: `size` bytes (a multiple of 4 KiB) at `gpa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageImport {
    /// Guest-physical address of the first page (4 KiB aligned).
    pub gpa: u64,
    /// Length in bytes, a non-zero multiple of [`PAGE_SIZE`].
    pub size: u64,
    /// How the platform imports it.
    pub kind: PageKind,
    /// Its contents.
    pub data: PageData,
    /// What the import is, for traces and errors ("firmware", "SEV metadata SECRETS", ...).
    pub label: String,
}

impl PageImport {
    /// Number of 4 KiB pages the import covers.
    pub fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// The bytes of page `index`, written into `buf` (zero-padded where the data ends).
    pub fn page_into(&self, index: u64, buf: &mut [u8; PAGE_SIZE as usize]) {
        match self.page_slice(index) {
            Some(s) if s.len() == buf.len() => buf.copy_from_slice(s),
            Some(s) => {
                buf[..s.len()].copy_from_slice(s);
                buf[s.len()..].fill(0);
            }
            None => buf.fill(0),
        }
    }

    /// The stored bytes of page `index` without copying: a whole page, a shorter tail (the rest
    /// is zero), or `None` when the page is all zeros.
    pub fn page_slice(&self, index: u64) -> Option<&[u8]> {
        match &self.data {
            PageData::Zero => None,
            PageData::Bytes { blob, offset } => {
                let start = offset.checked_add(usize::try_from(index * PAGE_SIZE).ok()?)?;
                if start >= blob.len() {
                    return None;
                }
                let end = (start + PAGE_SIZE as usize).min(blob.len());
                Some(&blob[start..end])
            }
        }
    }
}

/// A segment register as the VMCB/VMSA holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in the VMCB's packed 12-bit form.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// The register state a vCPU starts in, as the VMM sets it before launch.
///
/// On SEV-SNP, KVM turns this state into the VMSA it measures at `LAUNCH_FINISH`; on TDX the
/// initial state is architectural and this only records the entry point; plain guests get it
/// through `KVM_SET_REGS`/`KVM_SET_SREGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuState {
    /// ES (segment registers follow: CS, SS, DS, FS, GS).
    pub es: Segment,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// GDTR (then LDTR, IDTR and the task register).
    pub gdtr: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// IDTR.
    pub idtr: Segment,
    /// TR.
    pub tr: Segment,
    /// CR0 (then CR3, CR4 and EFER).
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// Instruction pointer (offset into CS).
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// RAX (general registers follow; RDX holds the CPU signature at reset).
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// DR6 (then DR7).
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// PAT MSR.
    pub g_pat: u64,
    /// XCR0.
    pub xcr0: u64,
    /// MXCSR (KVM copies the FPU state into the VMSA, with the x87 control word below).
    pub mxcsr: u32,
    /// X87_FCW.
    pub x87_fcw: u16,
}

impl VcpuState {
    /// The x86 reset state KVM and QEMU give a vCPU, entering at `eip` (0xFFFFFFF0 for the BSP,
    /// the SEV-ES reset block's address for APs), with `rdx` holding the CPU signature.
    pub fn reset(eip: u32, cpu_signature: u32) -> Self {
        let data = Segment {
            selector: 0,
            attrib: 0x93,
            limit: 0xffff,
            base: 0,
        };
        VcpuState {
            es: data,
            cs: Segment {
                selector: 0xf000,
                attrib: 0x9b,
                limit: 0xffff,
                base: u64::from(eip & 0xffff_0000),
            },
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment { attrib: 0, ..data },
            ldtr: Segment {
                attrib: 0x82,
                ..data
            },
            idtr: Segment { attrib: 0, ..data },
            tr: Segment {
                attrib: 0x8b,
                ..data
            },
            // KVM forces CR0.ET (0x10); sets CR4.MCE and EFER.SVME for SEV-ES guests.
            cr0: 0x10,
            cr3: 0,
            cr4: 0x40,
            efer: 0x1000,
            rip: u64::from(eip & 0xffff),
            rflags: 0x2,
            rax: 0,
            rbx: 0,
            rcx: 0,
            rdx: u64::from(cpu_signature),
            rsi: 0,
            rdi: 0,
            rsp: 0,
            rbp: 0,
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            g_pat: 0x0007_0406_0007_0406,
            xcr0: 0x1,
            mxcsr: 0x1f80,
            x87_fcw: 0x37f,
        }
    }
}

/// A RAM range the guest needs, for the memory map and (on TDX) PAGE.AUG-accepted memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    /// First byte.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Start of the window below 4 GiB where firmware images may be mapped (256 MiB).
pub const FIRMWARE_WINDOW: u64 = (1 << 32) - (256 << 20);

/// Whether `[gpa, gpa + size)` lies in guest RAM (`memory` bytes laid out as
/// [`crate::linux::memory_layout`] does) or in the firmware window just below 4 GiB.
pub fn in_guest_memory(gpa: u64, size: u64, memory: u64) -> bool {
    let Some(end) = gpa.checked_add(size) else {
        return false;
    };
    let in_fw = gpa >= FIRMWARE_WINDOW && end <= 1 << 32;
    in_fw
        || crate::linux::memory_layout(memory)
            .iter()
            .any(|r| gpa >= r.gpa && end <= r.gpa + r.size)
}

/// An SNP ID block and its auth block, as `SNP_LAUNCH_FINISH` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlockPair {
    /// The 96-byte ID block.
    pub id_block: Vec<u8>,
    /// The 4096-byte ID auth block.
    pub id_auth: Vec<u8>,
    /// Whether the auth block carries an author key (`auth_key_en`).
    pub author_key_enabled: bool,
}

/// Everything a launch needs, in the order the platform must see it.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// The platform the plan is for.
    pub platform: Platform,
    /// Page imports in launch order (the order is part of the measurement).
    pub imports: Vec<PageImport>,
    /// Initial state of each vCPU, index = vCPU id.
    pub vcpus: Vec<VcpuState>,
    /// SEV features written into every VMSA (`vmsa_features` of `KVM_SEV_INIT2`, SNP only).
    pub sev_features: u64,
    /// Guest policy (SNP `LAUNCH_START` policy, TDX attributes), when the payload sets one.
    pub policy: Option<u64>,
    /// SNP ID block and auth block, when the payload carries one.
    pub id_block: Option<IdBlockPair>,
    /// Host data for `SNP_LAUNCH_FINISH` (32 bytes, zero when unset).
    pub host_data: [u8; 32],
    /// RAM the guest gets (below and above the 32-bit hole).
    pub memory: Vec<MemoryRange>,
    /// Entry point for plain direct boot (bzImage 64-bit entry or ELF entry), if any.
    pub entry: Option<u64>,
    /// TDX: GPA of the TD HOB section. Its import is unmeasured zero pages; the launch backend
    /// writes the HOB (memory map for TDVF) there before `KVM_TDX_INIT_MEM_REGION`.
    pub td_hob: Option<u64>,
}

impl LaunchPlan {
    /// An empty plan for `platform`.
    pub fn new(platform: Platform) -> Self {
        LaunchPlan {
            platform,
            imports: Vec::new(),
            vcpus: Vec::new(),
            sev_features: 0,
            policy: None,
            id_block: None,
            host_data: [0; 32],
            memory: Vec::new(),
            entry: None,
            td_hob: None,
        }
    }

    /// Total bytes covered by the imports.
    pub fn imported_bytes(&self) -> u64 {
        self.imports.iter().map(|i| i.size).sum()
    }
}
