//! Linux direct boot: the kernel-hashes table for SNP measured boot, and the load plan of a
//! bzImage or ELF kernel with initrd and command line for plain guests.

pub mod hashes;

use std::sync::Arc;

use crate::plan::{Blob, LaunchPlan, MemoryRange, PAGE_SIZE, PageData, PageImport, PageKind};

/// Where the boot parameters ("zero page") go.
pub const BOOT_PARAMS_GPA: u64 = 0x7000;
/// Where the command line goes.
pub const CMDLINE_GPA: u64 = 0x20000;
/// Where the protected-mode kernel goes.
pub const KERNEL_GPA: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM above it is moved above 4 GiB.
pub const MMIO_HOLE: u64 = 0xC000_0000;

/// What is wrong with a kernel, initrd or command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinuxError {
    /// Neither a bzImage nor an ELF64 executable.
    #[error("not a bzImage (no \"HdrS\" at 0x202) nor an ELF64 kernel")]
    UnknownFormat,
    /// The bzImage header is inconsistent.
    #[error("bzImage header: {0}")]
    BadHeader(String),
    /// An ELF header or program header is out of bounds.
    #[error("ELF kernel: {0}")]
    BadElf(String),
    /// The command line does not fit.
    #[error("command line of {len} bytes exceeds the kernel's limit of {max}")]
    CmdlineTooLong {
        /// Its length with the NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Guest memory is too small for what must be loaded.
    #[error("{what} of {size} bytes does not fit in {memory} bytes of guest memory")]
    NoRoom {
        /// The item.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The guest memory size.
        memory: u64,
    },
}

fn round_up(v: u64) -> u64 {
    v.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

fn import(gpa: u64, blob: Blob, offset: usize, len: usize, label: &str) -> PageImport {
    PageImport {
        gpa,
        size: round_up(len as u64).max(PAGE_SIZE),
        kind: PageKind::Normal,
        data: PageData::Bytes { blob, offset },
        label: label.to_string(),
    }
}

/// The guest RAM layout for `memory` bytes: below the MMIO hole, the rest above 4 GiB.
pub fn memory_layout(memory: u64) -> Vec<MemoryRange> {
    let low = memory.min(MMIO_HOLE);
    let mut v = vec![MemoryRange { gpa: 0, size: low }];
    if memory > low {
        v.push(MemoryRange {
            gpa: 1 << 32,
            size: memory - low,
        });
    }
    v
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Adds the imports for a plain direct boot of `kernel` to `plan` and sets its entry point.
///
/// bzImage: protected-mode code at 1 MiB, boot parameters (setup header, command line pointer,
/// initrd, e820 map) at 0x7000, command line at 0x20000, initrd at the top of low memory.
/// ELF: each PT_LOAD segment at its physical address, entry from the header.
pub fn plan_direct_boot(
    plan: &mut LaunchPlan,
    kernel: Arc<[u8]>,
    initrd: Option<Arc<[u8]>>,
    cmdline: &str,
    memory: u64,
) -> Result<(), LinuxError> {
    plan_direct_boot_blobs(
        plan,
        Blob::from(kernel),
        initrd.map(Blob::from),
        cmdline,
        memory,
    )
}

/// [`plan_direct_boot`] of files already in [`Blob`]s (mapped, say), without a copy.
pub fn plan_direct_boot_blobs(
    plan: &mut LaunchPlan,
    kernel: Blob,
    initrd: Option<Blob>,
    cmdline: &str,
    memory: u64,
) -> Result<(), LinuxError> {
    plan.memory = memory_layout(memory);
    let low_end = memory.min(MMIO_HOLE);
    let k = &kernel[..];
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);
    if k.len() >= 0x250 && &k[0x202..0x206] == b"HdrS" {
        let setup_sects = match k[0x1f1] {
            0 => 4,
            n => u64::from(n),
        };
        let setup_size = ((setup_sects + 1) * 512) as usize;
        if setup_size >= k.len() {
            return Err(LinuxError::BadHeader(format!(
                "setup of {setup_size} bytes leaves no kernel in {} bytes",
                k.len()
            )));
        }
        let version = le16(k, 0x206);
        let cmdline_max = if version >= 0x206 {
            le32(k, 0x238) as usize
        } else {
            255
        };
        if cmd.len() > cmdline_max + 1 {
            return Err(LinuxError::CmdlineTooLong {
                len: cmd.len(),
                max: cmdline_max,
            });
        }
        let code_len = (k.len() - setup_size) as u64;
        if KERNEL_GPA + code_len > low_end {
            return Err(LinuxError::NoRoom {
                what: "kernel",
                size: code_len,
                memory,
            });
        }
        let mut params = vec![0u8; PAGE_SIZE as usize];
        let hdr_end = (0x202 + usize::from(k[0x201])).min(0x280);
        params[0x1f1..hdr_end].copy_from_slice(&k[0x1f1..hdr_end]);
        params[0x210] = 0xff; // type_of_loader: undefined
        params[0x211] |= 0x80; // CAN_USE_HEAP
        params[0x224..0x226].copy_from_slice(&0xfe00u16.to_le_bytes());
        params[0x228..0x22c].copy_from_slice(&(CMDLINE_GPA as u32).to_le_bytes());
        if let Some(rd) = &initrd {
            let max = if version >= 0x203 {
                u64::from(le32(k, 0x22c))
            } else {
                0x37ff_ffff
            };
            let top = (max + 1).min(low_end);
            let size = rd.len() as u64;
            let at = top
                .checked_sub(size)
                .map(|a| a & !(PAGE_SIZE - 1))
                .filter(|a| *a >= round_up(KERNEL_GPA + code_len))
                .ok_or(LinuxError::NoRoom {
                    what: "initrd",
                    size,
                    memory,
                })?;
            params[0x218..0x21c].copy_from_slice(&(at as u32).to_le_bytes());
            params[0x21c..0x220].copy_from_slice(&(size as u32).to_le_bytes());
            plan.imports
                .push(import(at, rd.clone(), 0, rd.len(), "initrd"));
        }
        // e820: the RAM ranges, count at 0x1e8, 20-byte entries at 0x2d0.
        let ranges = memory_layout(memory);
        params[0x1e8] = ranges.len() as u8;
        for (i, r) in ranges.iter().enumerate() {
            let at = 0x2d0 + i * 20;
            params[at..at + 8].copy_from_slice(&r.gpa.to_le_bytes());
            params[at + 8..at + 16].copy_from_slice(&r.size.to_le_bytes());
            params[at + 16..at + 20].copy_from_slice(&1u32.to_le_bytes());
        }
        plan.imports.insert(
            0,
            import(
                BOOT_PARAMS_GPA,
                Blob::from(params),
                0,
                PAGE_SIZE as usize,
                "boot params",
            ),
        );
        let cmd_len = cmd.len();
        plan.imports.insert(
            1,
            import(CMDLINE_GPA, Blob::from(cmd), 0, cmd_len, "command line"),
        );
        plan.imports.insert(
            2,
            import(
                KERNEL_GPA,
                kernel.clone(),
                setup_size,
                code_len as usize,
                "kernel",
            ),
        );
        let xloadflags = le16(k, 0x236);
        plan.entry = Some(if version >= 0x20c && xloadflags & 1 != 0 {
            KERNEL_GPA + 0x200
        } else {
            KERNEL_GPA
        });
        return Ok(());
    }
    if k.len() >= 64 && &k[..4] == b"\x7fELF" && k[4] == 2 && k[5] == 1 {
        let bad = |m: String| LinuxError::BadElf(m);
        let phoff = le64(k, 0x20) as usize;
        let phentsize = usize::from(le16(k, 0x36));
        let phnum = usize::from(le16(k, 0x38));
        if phentsize < 56 || phoff.saturating_add(phentsize.saturating_mul(phnum)) > k.len() {
            return Err(bad(format!(
                "{phnum} program headers of {phentsize} bytes at {phoff:#x} run past the file"
            )));
        }
        for i in 0..phnum {
            let ph = &k[phoff + i * phentsize..];
            if le32(ph, 0) != 1 {
                continue;
            }
            let offset = le64(ph, 8) as usize;
            let paddr = le64(ph, 24);
            let filesz = le64(ph, 32);
            let memsz = le64(ph, 40);
            let in_file = (offset as u64)
                .checked_add(filesz)
                .is_some_and(|end| end <= k.len() as u64);
            if !in_file || filesz > memsz {
                return Err(bad(format!("segment {i} data runs past the file")));
            }
            if paddr % PAGE_SIZE != 0 {
                return Err(bad(format!(
                    "segment {i} at {paddr:#x} is not page aligned"
                )));
            }
            if paddr.saturating_add(memsz) > low_end {
                return Err(LinuxError::NoRoom {
                    what: "kernel segment",
                    size: memsz,
                    memory,
                });
            }
            if memsz == 0 {
                continue;
            }
            let mut imp = import(
                paddr,
                kernel.clone(),
                offset,
                filesz as usize,
                "kernel segment",
            );
            imp.size = round_up(memsz);
            if filesz == 0 {
                imp.data = PageData::Zero;
            } else if filesz < memsz || filesz % PAGE_SIZE != 0 {
                // The tail past filesz must read as zero: give the segment its own blob (bytes
                // past a blob's end read as zero) so no file bytes leak and nothing is padded.
                imp.data = PageData::Bytes {
                    blob: Blob::from(&k[offset..offset + filesz as usize]),
                    offset: 0,
                };
            }
            plan.imports.push(imp);
        }
        let cmd_len = cmd.len();
        plan.imports.push(import(
            CMDLINE_GPA,
            Blob::from(cmd),
            0,
            cmd_len,
            "command line",
        ));
        if let Some(rd) = &initrd {
            let size = rd.len() as u64;
            let at = low_end
                .checked_sub(size)
                .map(|a| a & !(PAGE_SIZE - 1))
                .ok_or(LinuxError::NoRoom {
                    what: "initrd",
                    size,
                    memory,
                })?;
            plan.imports
                .push(import(at, rd.clone(), 0, rd.len(), "initrd"));
        }
        plan.entry = Some(le64(k, 0x18));
        return Ok(());
    }
    Err(LinuxError::UnknownFormat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Platform;

    fn bzimage() -> Vec<u8> {
        let mut k = vec![0u8; 0x3000];
        k[0x1f1] = 3; // setup_sects: setup is 4 * 512 bytes
        k[0x201] = 0x6a;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        k[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        k[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
        k[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        for (i, b) in k.iter_mut().enumerate().skip(0x800) {
            *b = i as u8;
        }
        k
    }

    #[test]
    fn bzimage_plan_places_params_cmdline_kernel_and_initrd() {
        let mut plan = LaunchPlan::new(Platform::None);
        let initrd: Arc<[u8]> = Arc::from(vec![7u8; 10000]);
        plan_direct_boot(
            &mut plan,
            Arc::from(bzimage()),
            Some(initrd),
            "quiet",
            256 << 20,
        )
        .unwrap();
        let gpas: Vec<u64> = plan.imports.iter().map(|i| i.gpa).collect();
        assert_eq!(&gpas[..3], &[BOOT_PARAMS_GPA, CMDLINE_GPA, KERNEL_GPA]);
        let rd = &plan.imports[3];
        assert_eq!(rd.gpa % PAGE_SIZE, 0);
        assert!(rd.gpa + rd.size <= 256 << 20);
        let params = plan.imports[0].page_slice(0).unwrap();
        assert_eq!(&params[0x218..0x21c], &(rd.gpa as u32).to_le_bytes());
        assert_eq!(&params[0x228..0x22c], &(CMDLINE_GPA as u32).to_le_bytes());
        assert_eq!(plan.entry, Some(KERNEL_GPA + 0x200));
        // The kernel import starts after the setup sectors.
        assert_eq!(plan.imports[2].page_slice(0).unwrap()[0], 0x00);
        assert_eq!(plan.imports[2].page_slice(0).unwrap()[1], 0x01);
    }

    #[test]
    fn oversized_command_line_and_tiny_memory_are_errors() {
        let mut plan = LaunchPlan::new(Platform::None);
        let long = "x".repeat(3000);
        let e = plan_direct_boot(&mut plan, Arc::from(bzimage()), None, &long, 256 << 20);
        assert!(matches!(e, Err(LinuxError::CmdlineTooLong { .. })));
        let initrd: Arc<[u8]> = Arc::from(vec![1u8; 4 << 20]);
        let e = plan_direct_boot(&mut plan, Arc::from(bzimage()), Some(initrd), "", 2 << 20);
        assert!(matches!(e, Err(LinuxError::NoRoom { .. })), "{e:?}");
        let e = plan_direct_boot(&mut plan, Arc::from(vec![0u8; 100]), None, "", 256 << 20);
        assert_eq!(e, Err(LinuxError::UnknownFormat));
    }

    #[test]
    fn elf_segments_are_loaded_at_their_physical_addresses() {
        let mut k = vec![0u8; 0x2000];
        k[..4].copy_from_slice(b"\x7fELF");
        k[4] = 2;
        k[5] = 1;
        k[0x18..0x20].copy_from_slice(&0x10_0400u64.to_le_bytes()); // entry
        k[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // phoff
        k[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        k[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        k[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        k[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes()); // offset
        k[ph + 24..ph + 32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // paddr
        k[ph + 32..ph + 40].copy_from_slice(&0x800u64.to_le_bytes()); // filesz
        k[ph + 40..ph + 48].copy_from_slice(&0x3000u64.to_le_bytes()); // memsz
        k[0x1000..0x1800].fill(0xab);
        k[0x1800..].fill(0xcd); // past filesz: must not leak into the guest
        let mut plan = LaunchPlan::new(Platform::None);
        plan_direct_boot(&mut plan, Arc::from(k), None, "", 64 << 20).unwrap();
        let seg = &plan.imports[0];
        assert_eq!((seg.gpa, seg.size), (0x10_0000, 0x3000));
        let mut page = [0u8; 4096];
        seg.page_into(0, &mut page);
        assert!(page[..0x800].iter().all(|b| *b == 0xab));
        assert!(page[0x800..].iter().all(|b| *b == 0));
        assert_eq!(plan.entry, Some(0x10_0400));
    }
}
