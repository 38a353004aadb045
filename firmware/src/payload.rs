//! From a payload on disk and the VM configuration to a [`LaunchPlan`].

use std::path::{Path, PathBuf};

use crate::igvm::IgvmLoadError;
use crate::linux::{self, LinuxError, hashes::KernelHashes};
use crate::ovmf::tdvf::ATTR_PAGE_AUG;
use crate::ovmf::{Ovmf, OvmfError, SevSectionType, TdvfSectionType};
use crate::plan::{
    Blob, LaunchPlan, PAGE_SIZE, PageData, PageImport, PageKind, Platform, VcpuState,
    in_guest_memory,
};

/// Architectural reset vector of the bootstrap processor.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;

/// Files of a Linux direct boot.
#[derive(Debug, Clone, Default)]
pub struct KernelFiles {
    /// The kernel (bzImage or ELF).
    pub kernel: PathBuf,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// The command line, if any.
    pub cmdline: Option<String>,
}

/// What the guest boots.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An OVMF image, optionally with a kernel for (SNP: measured) direct boot.
    Firmware {
        /// The OVMF image.
        path: PathBuf,
        /// Kernel, initrd and command line for direct boot.
        kernel: Option<KernelFiles>,
    },
    /// An IGVM file.
    Igvm(PathBuf),
    /// A Linux kernel booted directly (plain guests only).
    Kernel(KernelFiles),
}

/// The VM configuration the plan depends on.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Target platform.
    pub platform: Platform,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// CPU signature (CPUID 1 EAX) KVM puts in RDX at reset.
    pub cpu_signature: u32,
    /// SEV features for the VMSAs (`vmsa_features`; SNP_ACTIVE is bit 0).
    pub sev_features: u64,
    /// Guest policy (SNP), if set.
    pub policy: Option<u64>,
    /// Host data for SNP_LAUNCH_FINISH.
    pub host_data: [u8; 32],
    /// Command line for an IGVM file's COMMAND_LINE parameter.
    pub cmdline: Option<String>,
}

/// Why a payload could not be turned into a plan; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The OVMF image is malformed or lacks what the platform needs.
    #[error("OVMF image {path}: {error}")]
    Ovmf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: OvmfError,
    },
    /// The kernel-hashes section is missing or unusable.
    #[error("OVMF image {path}: {reason}")]
    KernelHashes {
        /// The OVMF file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A metadata section lies outside guest memory.
    #[error(
        "OVMF image {path}: {section} at {gpa:#x}+{size:#x} lies outside guest memory \
         ({memory:#x} bytes of RAM plus the firmware window below 4 GiB)"
    )]
    SectionOutsideMemory {
        /// The file.
        path: PathBuf,
        /// The section.
        section: String,
        /// Its GPA.
        gpa: u64,
        /// Its size.
        size: u64,
        /// Guest memory size.
        memory: u64,
    },
    /// APs need the SEV-ES reset block.
    #[error(
        "OVMF image {path} has no SEV-ES reset block, so vCPUs after the first cannot start under SEV-SNP"
    )]
    NoResetBlock {
        /// The file.
        path: PathBuf,
    },
    /// The kernel is malformed or does not fit.
    #[error("kernel {path}: {error}")]
    Linux {
        /// The kernel file.
        path: PathBuf,
        /// What is wrong.
        error: LinuxError,
    },
    /// The IGVM file is malformed or breaks a rule.
    #[error("IGVM file {path}: {error}")]
    Igvm {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: IgvmLoadError,
    },
    /// The combination is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The configuration is invalid.
    #[error("invalid VM configuration: {0}")]
    Config(String),
}

/// The contents of a whole file, mapped when it can be (see [`Blob::from_file`]).
pub fn read_file(path: &Path) -> Result<Blob, PayloadError> {
    Blob::from_file(path).map_err(|error| PayloadError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Builds the launch plan of `payload` for `config`.
pub fn build_plan(payload: &Payload, config: &VmConfig) -> Result<LaunchPlan, PayloadError> {
    if config.cpus == 0 || config.cpus > 4096 {
        return Err(PayloadError::Config(format!(
            "{} vCPUs: expected 1 to 4096",
            config.cpus
        )));
    }
    let mut plan = match payload {
        Payload::Firmware { path, kernel } => {
            let image = read_file(path)?;
            let ovmf = Ovmf::parse_blob(image).map_err(|error| PayloadError::Ovmf {
                path: path.clone(),
                error,
            })?;
            ovmf_plan(&ovmf, path, kernel.as_ref(), config)?
        }
        Payload::Igvm(path) => {
            let bytes = read_file(path)?;
            crate::igvm::load(&bytes, config).map_err(|error| PayloadError::Igvm {
                path: path.clone(),
                error,
            })?
        }
        Payload::Kernel(files) => {
            if config.platform != Platform::None {
                return Err(PayloadError::Unsupported(format!(
                    "a bare kernel cannot be launched on {}: use --firmware with an OVMF image \
                     (SEV-SNP measured direct boot) or an IGVM file",
                    config.platform
                )));
            }
            let mut plan = LaunchPlan::new(Platform::None);
            let kernel = read_file(&files.kernel)?;
            let initrd = files.initrd.as_deref().map(read_file).transpose()?;
            linux::plan_direct_boot_blobs(
                &mut plan,
                kernel,
                initrd,
                files.cmdline.as_deref().unwrap_or(""),
                config.memory,
            )
            .map_err(|error| PayloadError::Linux {
                path: files.kernel.clone(),
                error,
            })?;
            plan.vcpus = (0..config.cpus)
                .map(|_| VcpuState::reset(BSP_RESET_EIP, config.cpu_signature))
                .collect();
            plan
        }
    };
    if plan.policy.is_none() {
        plan.policy = config.policy;
    }
    plan.host_data = config.host_data;
    Ok(plan)
}

/// The plan of an already parsed OVMF image (`path` names it in errors; `kernel` requests SNP
/// measured direct boot).
pub fn ovmf_plan(
    ovmf: &Ovmf,
    path: &Path,
    kernel: Option<&KernelFiles>,
    config: &VmConfig,
) -> Result<LaunchPlan, PayloadError> {
    let ovmf_err = |error| PayloadError::Ovmf {
        path: path.to_path_buf(),
        error,
    };
    let mut plan = LaunchPlan::new(config.platform);
    plan.memory = linux::memory_layout(config.memory);
    match config.platform {
        Platform::None | Platform::SevSnp => {
            plan.imports.push(PageImport {
                gpa: ovmf.gpa(),
                size: ovmf.image().len() as u64,
                kind: PageKind::Normal,
                data: PageData::Bytes {
                    blob: ovmf.image().clone(),
                    offset: 0,
                },
                label: "firmware".into(),
            });
        }
        Platform::Tdx => {}
    }
    match config.platform {
        Platform::None => {
            if kernel.is_some() {
                return Err(PayloadError::Unsupported(
                    "--kernel with --firmware on a plain guest: pass the kernel alone (direct boot) \
                     or let the firmware load it from disk"
                        .into(),
                ));
            }
            plan.vcpus = (0..config.cpus)
                .map(|_| VcpuState::reset(BSP_RESET_EIP, config.cpu_signature))
                .collect();
        }
        Platform::SevSnp => {
            let hashes = match kernel {
                Some(k) => Some(kernel_hashes(k)?),
                None => None,
            };
            let sections = ovmf.sev_sections().map_err(ovmf_err)?;
            if hashes.is_some() && ovmf.kernel_hashes_section().is_none() {
                return Err(PayloadError::KernelHashes {
                    path: path.to_path_buf(),
                    reason:
                        "a kernel was given for measured direct boot, but the SEV metadata has \
                             no SNP KERNEL_HASHES section"
                            .into(),
                });
            }
            for s in sections {
                check_section(path, s.kind.name(), s.gpa, s.size, config)?;
                let (kind, data) = match s.kind {
                    SevSectionType::SecMem | SevSectionType::SvsmCaa => {
                        (PageKind::Zero, PageData::Zero)
                    }
                    SevSectionType::Secrets => (PageKind::Secrets, PageData::Zero),
                    SevSectionType::Cpuid => (PageKind::Cpuid, PageData::Zero),
                    SevSectionType::KernelHashes => match &hashes {
                        None => (PageKind::Zero, PageData::Zero),
                        Some(h) => {
                            let table_gpa =
                                u64::from(ovmf.kernel_hashes_table_gpa().map_err(ovmf_err)?);
                            let off = table_gpa
                                .checked_sub(s.gpa)
                                .filter(|o| o + h.table().len() as u64 <= s.size)
                                .ok_or_else(|| PayloadError::KernelHashes {
                                    path: path.to_path_buf(),
                                    reason: format!(
                                        "the hashes table GPA {table_gpa:#x} is not inside the \
                                         KERNEL_HASHES section {:#x}+{:#x}",
                                        s.gpa, s.size
                                    ),
                                })?;
                            let mut page = vec![0u8; s.size as usize];
                            let t = h.table();
                            page[off as usize..off as usize + t.len()].copy_from_slice(&t);
                            (
                                PageKind::Normal,
                                PageData::Bytes {
                                    blob: Blob::from(page),
                                    offset: 0,
                                },
                            )
                        }
                    },
                };
                plan.imports.push(PageImport {
                    gpa: s.gpa,
                    size: s.size,
                    kind,
                    data,
                    label: format!("SEV metadata {}", s.kind.name()),
                });
            }
            let reset = ovmf.sev_es_reset_eip().map_err(ovmf_err)?;
            plan.vcpus
                .push(VcpuState::reset(BSP_RESET_EIP, config.cpu_signature));
            for _ in 1..config.cpus {
                let eip = reset.ok_or_else(|| PayloadError::NoResetBlock {
                    path: path.to_path_buf(),
                })?;
                plan.vcpus.push(VcpuState::reset(eip, config.cpu_signature));
            }
            plan.sev_features = config.sev_features;
        }
        Platform::Tdx => {
            if kernel.is_some() {
                return Err(PayloadError::Unsupported(
                    "--kernel with --firmware on TDX: TDVF measures a direct-boot kernel into RTMRs, \
                     not MRTD; this is not supported yet"
                        .into(),
                ));
            }
            for s in ovmf.tdvf_sections().map_err(ovmf_err)? {
                // PERM_MEM and PAGE_AUG sections are accepted by the guest later, not added.
                if s.kind == TdvfSectionType::PermMem || s.attributes & ATTR_PAGE_AUG != 0 {
                    continue;
                }
                check_section(path, s.kind.name(), s.gpa, s.size, config)?;
                let data = match s.kind {
                    _ if s.raw_size == 0 => PageData::Zero,
                    _ => {
                        let img = ovmf.image();
                        let start = s.data_offset as usize;
                        let end = start + s.raw_size as usize;
                        if s.raw_size as u64 == s.size {
                            PageData::Bytes {
                                blob: img.clone(),
                                offset: start,
                            }
                        } else {
                            // Only the raw data; the rest of the section reads as zero.
                            PageData::Bytes {
                                blob: Blob::from(&img[start..end]),
                                offset: 0,
                            }
                        }
                    }
                };
                if s.kind == TdvfSectionType::TdHob {
                    plan.td_hob = Some(s.gpa);
                }
                let kind = match (s.measured(), &data) {
                    (false, _) => PageKind::Unmeasured,
                    (true, PageData::Zero) => PageKind::Zero,
                    (true, _) => PageKind::Normal,
                };
                plan.imports.push(PageImport {
                    gpa: s.gpa,
                    size: s.size,
                    kind,
                    data,
                    label: format!("TDVF {}", s.kind.name()),
                });
            }
            plan.vcpus = (0..config.cpus)
                .map(|_| VcpuState::reset(BSP_RESET_EIP, 0))
                .collect();
        }
    }
    debug_assert!(plan.imports.iter().all(|i| i.size % PAGE_SIZE == 0));
    Ok(plan)
}

fn check_section(
    path: &Path,
    name: &str,
    gpa: u64,
    size: u64,
    config: &VmConfig,
) -> Result<(), PayloadError> {
    if in_guest_memory(gpa, size, config.memory) {
        return Ok(());
    }
    Err(PayloadError::SectionOutsideMemory {
        path: path.to_path_buf(),
        section: name.to_string(),
        gpa,
        size,
        memory: config.memory,
    })
}

/// Reads the direct-boot files and hashes them as QEMU does for the kernel-hashes table.
///
/// The files are hashed (and not kept), kernel and initrd in parallel.
pub fn kernel_hashes(k: &KernelFiles) -> Result<KernelHashes, PayloadError> {
    let (kernel, initrd) = std::thread::scope(|s| {
        let initrd = s.spawn(|| k.initrd.as_deref().map(sha256_file).transpose());
        let kernel = sha256_file(&k.kernel);
        // A panic in the hashing thread is a bug in this crate, not bad input.
        (
            kernel,
            initrd.join().expect("SHA-256 of a file does not panic"),
        )
    });
    Ok(KernelHashes::from_digests(
        kernel?,
        initrd?,
        k.cmdline.as_deref(),
    ))
}

/// SHA-256 of a file (mapped when it can be, so it is not copied).
fn sha256_file(path: &Path) -> Result<[u8; 32], PayloadError> {
    use sha2::{Digest, Sha256};
    Ok(Sha256::digest(&*read_file(path)?).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

    fn config(platform: Platform, cpus: u32) -> VmConfig {
        VmConfig {
            platform,
            cpus,
            memory: 512 << 20,
            cpu_signature: 0x00a0_0f11,
            sev_features: 1,
            policy: None,
            host_data: [0; 32],
            cmdline: None,
        }
    }

    fn firmware() -> Option<Payload> {
        Path::new(OVMF).is_file().then(|| Payload::Firmware {
            path: OVMF.into(),
            kernel: None,
        })
    }

    #[test]
    fn debian_ovmf_plans_for_snp_and_tdx() {
        let Some(fw) = firmware() else {
            eprintln!("skipped: {OVMF} is not installed");
            return;
        };
        let snp = build_plan(&fw, &config(Platform::SevSnp, 3)).unwrap();
        assert_eq!(snp.imports[0].label, "firmware");
        assert_eq!(snp.imports[0].gpa, 0xffe0_0000);
        let kinds: Vec<PageKind> = snp.imports[1..].iter().map(|i| i.kind).collect();
        assert!(kinds.contains(&PageKind::Secrets) && kinds.contains(&PageKind::Cpuid));
        assert_eq!(snp.vcpus.len(), 3);
        assert_eq!(snp.vcpus[0].rip, 0xfff0);
        assert_ne!(
            snp.vcpus[1].cs.base, snp.vcpus[0].cs.base,
            "APs start at the reset block"
        );

        let tdx = build_plan(&fw, &config(Platform::Tdx, 1)).unwrap();
        let bfv = &tdx.imports[0];
        assert_eq!(
            (bfv.label.as_str(), bfv.kind),
            ("TDVF BFV", PageKind::Normal)
        );
        assert!(
            tdx.imports
                .iter()
                .any(|i| i.label == "TDVF CFV" && i.kind == PageKind::Unmeasured)
        );
        assert_eq!(tdx.td_hob, Some(0x80_9000));
        assert!(tdx.imports.iter().all(|i| i.kind != PageKind::Secrets));
    }

    #[test]
    fn tiny_guest_memory_is_refused_for_sections_outside_it() {
        let Some(fw) = firmware() else {
            eprintln!("skipped: {OVMF} is not installed");
            return;
        };
        let mut c = config(Platform::SevSnp, 1);
        c.memory = 4 << 20; // the SEV sections sit at 8 MiB
        let e = build_plan(&fw, &c).unwrap_err();
        assert!(e.to_string().contains("outside guest memory"), "{e}");
        assert!(e.to_string().contains(OVMF), "{e}");
    }
}
