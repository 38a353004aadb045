//! Builds the probe guest (`resources/probe`, a freestanding kernel outside the workspace) with a
//! nested `cargo build --release`, then writes its two forms into `OUT_DIR`:
//! `probe.elf` (the ELF64 image with the PVH note) and `probe.bzImage` (the same flat image behind
//! a Linux boot protocol setup header). `veil_vmm::probe_image` embeds both.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// Where the kernel is loaded and linked (1 MiB).
const LOAD_ADDR: u64 = 0x10_0000;
/// Number of 512-byte setup sectors after the boot sector in the bzImage.
const SETUP_SECTS: u8 = 1;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: building the probe guest: {e}");
        exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let probe = manifest.join("../resources/probe");
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "link.ld",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", probe.join(p).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let elf_path = build_probe(&probe, &out)?;
    let elf = fs::read(&elf_path).map_err(|e| format!("reading {}: {e}", elf_path.display()))?;
    let flat = flat_image(&elf)?;
    let bz = bzimage(&flat.bytes, flat.mem_size)?;
    write(&out.join("probe.elf"), &elf)?;
    write(&out.join("probe.bzImage"), &bz)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs the nested cargo build and returns the path of the probe's ELF.
fn build_probe(probe: &Path, out: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("probe-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(probe)
        .args(["build", "--release", "--locked", "--offline"]);
    // Settings meant for the outer build (coverage, sanitizers, another target or profile) must
    // not leak into the freestanding kernel, whose flags live in its own .cargo/config.toml.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = matches!(
            key,
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_INCREMENTAL"
        ) || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_PROFILE_");
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir);
    let output = cmd
        .output()
        .map_err(|e| format!("running cargo in {}: {e}", probe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build in {} failed ({}):\n{}",
            probe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/veil-probe"))
}

/// The bytes of the probe's single `PT_LOAD` segment and its size in memory.
struct Flat {
    bytes: Vec<u8>,
    mem_size: u64,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("probe ELF truncated at {off:#x}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("probe ELF truncated at {off:#x}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, off)?) | (u64::from(u32_at(b, off + 4)?) << 32))
}

/// Extracts the flat image: the probe is linked as exactly one `PT_LOAD` at 1 MiB.
fn flat_image(elf: &[u8]) -> Result<Flat, String> {
    if elf.get(0..5) != Some(b"\x7fELF\x02") {
        return Err("probe is not an ELF64 file".into());
    }
    let phoff = usize::try_from(u64_at(elf, 0x20)?).map_err(|e| e.to_string())?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    let entry = u64_at(elf, 0x18)?;
    if entry != LOAD_ADDR + 0x200 {
        return Err(format!(
            "probe entry is {entry:#x}, expected {:#x}",
            LOAD_ADDR + 0x200
        ));
    }
    let mut found = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != 1 {
            continue; // not PT_LOAD
        }
        if found.is_some() {
            return Err("probe has more than one PT_LOAD segment".into());
        }
        let offset = usize::try_from(u64_at(elf, ph + 0x08)?).map_err(|e| e.to_string())?;
        let paddr = u64_at(elf, ph + 0x18)?;
        let filesz = usize::try_from(u64_at(elf, ph + 0x20)?).map_err(|e| e.to_string())?;
        let memsz = u64_at(elf, ph + 0x28)?;
        if paddr != LOAD_ADDR {
            return Err(format!(
                "probe PT_LOAD at {paddr:#x}, expected {LOAD_ADDR:#x}"
            ));
        }
        let bytes = elf
            .get(offset..offset + filesz)
            .ok_or("probe PT_LOAD lies outside the file")?
            .to_vec();
        found = Some(Flat {
            bytes,
            mem_size: memsz,
        });
    }
    found.ok_or_else(|| "probe has no PT_LOAD segment".into())
}

/// Wraps the flat image in a bzImage: boot sector and setup sectors carrying a setup header
/// (Linux boot protocol 2.12, Documentation/arch/x86/boot.rst), then the image itself, which the
/// loader places at `code32_start` (1 MiB) and enters at +0x200 in 64-bit mode.
fn bzimage(flat: &[u8], mem_size: u64) -> Result<Vec<u8>, String> {
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut b = vec![0u8; setup_len];
    let init_size = u32::try_from(mem_size.next_multiple_of(4096)).map_err(|e| e.to_string())?;
    let syssize = u32::try_from(flat.len().div_ceil(16)).map_err(|e| e.to_string())?;
    let version = b"veil-probe\0";
    let version_off = 0x300;
    b[version_off..version_off + version.len()].copy_from_slice(version);

    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        b[off..off + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut b, 0x1f1, &[SETUP_SECTS]); // setup_sects
    put(&mut b, 0x1f4, &syssize.to_le_bytes()); // syssize (16-byte paragraphs)
    put(&mut b, 0x1fa, &0xffffu16.to_le_bytes()); // vid_mode: normal
    put(&mut b, 0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut b, 0x200, &[0xeb, 0x66]); // jump over the header to 0x268,
    put(&mut b, 0x268, &[0xf4, 0xeb, 0xfd]); // where a real-mode loader finds `hlt` in a loop
    put(&mut b, 0x202, b"HdrS"); // header magic
    put(&mut b, 0x206, &0x020cu16.to_le_bytes()); // protocol version 2.12
    put(&mut b, 0x20c, &0x1000u16.to_le_bytes()); // start_sys_seg (obsolete)
    put(&mut b, 0x20e, &((version_off - 0x200) as u16).to_le_bytes()); // kernel_version
    put(&mut b, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut b, 0x212, &0x8000u16.to_le_bytes()); // setup_move_size
    put(&mut b, 0x214, &(LOAD_ADDR as u32).to_le_bytes()); // code32_start
    put(&mut b, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut b, 0x230, &0x10_0000u32.to_le_bytes()); // kernel_alignment: 1 MiB
    put(&mut b, 0x234, &[0]); // relocatable_kernel: no
    put(&mut b, 0x235, &[20]); // min_alignment: 2^20
    put(&mut b, 0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut b, 0x238, &0xffffu32.to_le_bytes()); // cmdline_size
    put(&mut b, 0x258, &LOAD_ADDR.to_le_bytes()); // pref_address
    put(&mut b, 0x260, &init_size.to_le_bytes()); // init_size
    b.extend_from_slice(flat);
    Ok(b)
}
