//! The KVM floor: the least any VMM must do to run a guest, as a baseline for `veil run`.
//!
//! ```text
//! kvm_floor <kernel.elf> [--until first-io|exit] [--memory-mib N]
//! ```
//!
//! Exactly what it does, in order:
//! 1. reads the ELF64 kernel file, finds its `PT_LOAD` segments and the PVH entry
//!    (`XEN_ELFNOTE_PHYS32_ENTRY` note, type 18);
//! 2. opens `/dev/kvm`, `KVM_CREATE_VM` (default type);
//! 3. maps `--memory-mib` (default 128) MiB of anonymous memory (`MAP_NORESERVE`, so only pages
//!    touched count) and registers it as memory slot 0 at guest address 0;
//! 4. copies the `PT_LOAD` segments to their physical addresses and writes a PVH
//!    `hvm_start_info` (magic, version 1, a two-entry memory map, the command line
//!    `probe.run=boot`) at 0x6000;
//! 5. `KVM_CREATE_VCPU` 0; with `--until exit` only, `KVM_SET_CPUID2` with KVM's supported
//!    CPUID (the probe enables long mode, which needs the LM bit in the guest's CPUID);
//! 6. `KVM_SET_SREGS`: 32-bit flat protected mode, paging off (the PVH entry state);
//!    `KVM_SET_REGS`: RIP = PVH entry, RBX = 0x6000, RFLAGS = 0x2;
//! 7. `KVM_RUN` until:
//!    - `--until first-io` (the default): the first port write (the probe's first instruction
//!      writes port 0x80), then exits with status 0;
//!    - `--until exit`: the guest writes port 0xf4; exits with the low byte of that value.
//!      Meanwhile it answers port I/O the least a serial console needs: COM1 bytes go to stdout,
//!      the line status register reads "transmitter empty", other reads return all ones and
//!      other writes are ignored; MMIO reads return all ones. Any other exit is an error.
//!
//! There is no device model, no interrupt controller, no threads, no argument library: the
//! distance between this and a VMM's exec-to-exit time is that VMM's own cost.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};

const START_INFO: u64 = 0x6000;
const MEMMAP: u64 = START_INFO + 0x38;
const CMDLINE: u64 = 0x2_0000;
const CMDLINE_TEXT: &[u8] = b"probe.run=boot\0";
const COM1: u16 = 0x3f8;
const EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    FirstIo,
    Exit,
}

fn main() {
    let start = Instant::now();
    match run(start) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kvm_floor: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(start: Instant) -> Result<i32> {
    let mut args = std::env::args().skip(1);
    let mut kernel = None;
    let mut until = Until::FirstIo;
    let mut mem_mib: u64 = 128;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--until" => {
                until = match args.next().as_deref() {
                    Some("first-io") => Until::FirstIo,
                    Some("exit") => Until::Exit,
                    other => bail!("--until takes first-io or exit, not {other:?}"),
                }
            }
            "--memory-mib" => {
                let v = args.next().context("--memory-mib needs a value")?;
                mem_mib = v
                    .parse()
                    .with_context(|| format!("--memory-mib {v}: not a number"))?;
                if !(2..=4096).contains(&mem_mib) {
                    bail!("--memory-mib {mem_mib}: expected 2..=4096");
                }
            }
            _ if kernel.is_none() && !arg.starts_with('-') => kernel = Some(arg),
            _ => bail!("usage: kvm_floor <kernel.elf> [--until first-io|exit] [--memory-mib N]"),
        }
    }
    let path = kernel.context("usage: kvm_floor <kernel.elf> [--until first-io|exit]")?;
    let elf = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let image = parse_elf(&elf).with_context(|| format!("{path}: not a PVH ELF64 kernel"))?;
    let mem_size = mem_mib << 20;

    let kvm = Kvm::new().context("opening /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    // SAFETY: an anonymous private mapping at an address the kernel chooses; it aliases nothing.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mem_size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        bail!("mmap of {mem_mib} MiB: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `host` is a fresh mapping of exactly `mem_size` bytes that lives until exit.
    let mem = unsafe { std::slice::from_raw_parts_mut(host.cast::<u8>(), mem_size as usize) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem_size,
        userspace_addr: host as u64,
    };
    // SAFETY: the region is valid memory of this process for the VM's whole life (until exit).
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;

    for seg in &image.segments {
        let dst = mem
            .get_mut(seg.paddr as usize..)
            .and_then(|m| m.get_mut(..seg.mem_size as usize))
            .with_context(|| format!("segment at {:#x} does not fit in RAM", seg.paddr))?;
        let src = &elf[seg.offset as usize..][..seg.file_size as usize];
        dst[..src.len()].copy_from_slice(src);
        dst[src.len()..].fill(0);
    }
    write_start_info(mem, mem_size);

    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    if until == Until::Exit {
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .context("KVM_GET_SUPPORTED_CPUID")?;
        vcpu.set_cpuid2(&cpuid).context("KVM_SET_CPUID2")?;
    }
    let mut sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    let flat = |selector: u16, type_: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0x08, 0xb);
    let data = flat(0x10, 0x3);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        s: 0,
        db: 0,
        g: 0,
        ..flat(0x18, 0xb)
    };
    sregs.cr0 = 0x11; // PE, ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")?;
    let mut regs = vcpu.get_regs().context("KVM_GET_REGS")?;
    regs.rip = image.entry;
    regs.rbx = START_INFO;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut dlab = false;
    let mut first_io = true;
    loop {
        match vcpu.run().context("KVM_RUN")? {
            VcpuExit::IoOut(port, data) => {
                if first_io {
                    first_io = false;
                    eprintln!(
                        "kvm_floor: first port write (port {port:#x}) {:.3} ms after main",
                        start.elapsed().as_secs_f64() * 1e3
                    );
                    if until == Until::FirstIo {
                        return Ok(0);
                    }
                }
                match port {
                    EXIT_PORT => {
                        out.flush()?;
                        return Ok(i32::from(data.first().copied().unwrap_or(0)));
                    }
                    COM1 if !dlab => out.write_all(&data[..1])?,
                    p if p == COM1 + 3 => dlab = data.first().is_some_and(|v| v & 0x80 != 0),
                    _ => {}
                }
            }
            VcpuExit::IoIn(port, data) => {
                data.fill(0xff);
                if port == COM1 + 5 {
                    data[0] = 0x60; // THR and transmitter empty
                }
            }
            VcpuExit::MmioRead(_, data) => data.fill(0xff),
            VcpuExit::MmioWrite(..) => {}
            other => {
                out.flush()?;
                bail!("unexpected vCPU exit {other:?}");
            }
        }
    }
}

struct Segment {
    offset: u64,
    paddr: u64,
    file_size: u64,
    mem_size: u64,
}

struct Image {
    segments: Vec<Segment>,
    entry: u64,
}

fn le(bytes: &[u8], at: usize, len: usize) -> Result<u64> {
    let b = bytes
        .get(at..at + len)
        .with_context(|| format!("truncated at offset {at:#x}"))?;
    Ok(b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x)))
}

/// The `PT_LOAD` segments and the PVH entry point of an ELF64 file.
fn parse_elf(elf: &[u8]) -> Result<Image> {
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("no ELF64 magic");
    }
    let phoff = le(elf, 0x20, 8)? as usize;
    let phentsize = le(elf, 0x36, 2)? as usize;
    let phnum = le(elf, 0x38, 2)? as usize;
    let mut segments = Vec::new();
    let mut entry = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (kind, offset) = (le(elf, ph, 4)?, le(elf, ph + 8, 8)?);
        let (paddr, file_size, mem_size) = (
            le(elf, ph + 24, 8)?,
            le(elf, ph + 32, 8)?,
            le(elf, ph + 40, 8)?,
        );
        if offset
            .checked_add(file_size)
            .is_none_or(|end| end > elf.len() as u64)
        {
            bail!("program header {i} points past the end of the file");
        }
        if file_size > mem_size {
            bail!("program header {i}: file size above memory size");
        }
        match kind {
            1 => segments.push(Segment {
                offset,
                paddr,
                file_size,
                mem_size,
            }),
            4 => entry = entry.or(pvh_note(&elf[offset as usize..][..file_size as usize])?),
            _ => {}
        }
    }
    let entry = entry.context("no XEN_ELFNOTE_PHYS32_ENTRY note")?;
    Ok(Image { segments, entry })
}

/// The PVH entry in a `PT_NOTE` segment, if it holds one.
fn pvh_note(notes: &[u8]) -> Result<Option<u64>> {
    let mut at = 0;
    let align4 = |n: usize| (n + 3) & !3;
    while at + 12 <= notes.len() {
        let namesz = le(notes, at, 4)? as usize;
        let descsz = le(notes, at + 4, 4)? as usize;
        let kind = le(notes, at + 8, 4)?;
        let name = at + 12;
        let desc = name + align4(namesz);
        if kind == 18 && notes.get(name..name + namesz) == Some(b"Xen\0") {
            return Ok(Some(le(notes, desc, descsz.min(8))?));
        }
        at = desc + align4(descsz);
    }
    Ok(None)
}

/// Writes `hvm_start_info` (version 1) with a two-entry memory map and the command line.
fn write_start_info(mem: &mut [u8], mem_size: u64) {
    let put = |mem: &mut [u8], at: u64, bytes: &[u8]| {
        mem[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(mem, START_INFO, &0x336e_c578u32.to_le_bytes()); // magic
    put(mem, START_INFO + 4, &1u32.to_le_bytes()); // version
    put(mem, START_INFO + 24, &CMDLINE.to_le_bytes()); // cmdline_paddr
    put(mem, START_INFO + 40, &MEMMAP.to_le_bytes()); // memmap_paddr
    put(mem, START_INFO + 48, &2u32.to_le_bytes()); // memmap_entries
    for (i, (addr, size)) in [(0u64, 0x9_fc00u64), (0x10_0000, mem_size - 0x10_0000)]
        .into_iter()
        .enumerate()
    {
        let e = MEMMAP + 24 * i as u64;
        put(mem, e, &addr.to_le_bytes());
        put(mem, e + 8, &size.to_le_bytes());
        put(mem, e + 16, &1u32.to_le_bytes()); // E820 RAM
    }
    put(mem, CMDLINE, CMDLINE_TEXT);
}
