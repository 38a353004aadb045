//! `measure_mibps`: how fast `veil measure` digests a large payload, side by side in one run
//! with the SHA-384 floor (`openssl speed -evp sha384`) and with `sev-snp-measure`.
//!
//! Build first: `cargo build --release --bins`, then `target/release/measure_bench`.
//! Two payloads, both SEV-SNP with 4 vCPUs (EPYC-Milan):
//! - `direct-boot`: a 4 MiB OVMF-format image with a KERNEL_HASHES section plus an 8 MiB
//!   kernel and a 64 MiB initrd (measured direct boot: the files are SHA-256 hashed into the
//!   table, the image page by page with SHA-384);
//! - `large-image`: a 64 MiB OVMF-format image, every page SHA-384 measured (the worst case).
//!
//! MiB/s counts the payload's bytes over the wall time of the whole process; medians of
//! several runs (the spread in brackets), with the load average, since the cores are shared.
//! sev-snp-measure is run as its script, not through a pyenv shim. Goals: >= 0.8x the SHA-384
//! floor, >= 10x sev-snp-measure.
//!
//! `measure_bench --write-inputs DIR` only writes the payload files into DIR (for profiling
//! `veil measure` or sev-snp-measure by hand) and exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use veil_firmware::ovmf::footer::{self, FooterEntry};
use veil_firmware::ovmf::sev;

const MIB: f64 = 1024.0 * 1024.0;

fn image(size: usize, with_hashes: bool) -> Vec<u8> {
    let mut img: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let meta_at = size - 0x1000;
    let mut m = b"ASEV".to_vec();
    let mut secs = vec![
        (0x80_0000u32, 0x9000u32, 1u32),
        (0x80_9000, 0x1000, 2),
        (0x80_a000, 0x1000, 3),
    ];
    if with_hashes {
        secs.push((0x80_b000, 0x1000, 0x10));
    }
    m.extend_from_slice(&(16 + 12 * secs.len() as u32).to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&(secs.len() as u32).to_le_bytes());
    for (g, s, t) in secs {
        for v in [g, s, t] {
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    img[meta_at..meta_at + m.len()].copy_from_slice(&m);
    let mut hashes = 0x80_b000u32.to_le_bytes().to_vec();
    hashes.extend_from_slice(&0x400u32.to_le_bytes());
    let table = footer::encode(&[
        FooterEntry {
            guid: sev::SEV_METADATA_GUID,
            data: 0x1000u32.to_le_bytes().to_vec(),
        },
        FooterEntry {
            guid: sev::SEV_ES_RESET_BLOCK_GUID,
            data: 0xffff_f000u32.to_le_bytes().to_vec(),
        },
        FooterEntry {
            guid: sev::SEV_HASH_TABLE_RV_GUID,
            data: hashes,
        },
    ]);
    img[size - 32 - table.len()..size - 32].copy_from_slice(&table);
    img
}

/// The payload files, written into one directory.
struct Inputs {
    small: PathBuf,
    large: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn write_inputs(dir: &Path) -> anyhow::Result<Inputs> {
    let write = |name: &str, data: &[u8]| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    Ok(Inputs {
        small: write("OVMF-4M.fd", &image(4 << 20, true))?,
        large: write("OVMF-64M.fd", &image(64 << 20, false))?,
        kernel: write("vmlinuz", &vec![0x42u8; 8 << 20])?,
        initrd: write(
            "initrd.img",
            &(0..64u32 << 20).map(|i| (i >> 7) as u8).collect::<Vec<_>>(),
        )?,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) used so far by this process's waited-for children.
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17 (1-based), i.e. 13 and 14 after the name.
    (ticks(13) + ticks(14)) / 100.0
}

struct Timing {
    wall_s: f64,
    wall_min_s: f64,
    wall_max_s: f64,
    cpu_s: f64,
}

impl Timing {
    /// The median wall time with the spread of the runs.
    fn wall(&self) -> String {
        format!(
            "{:.4} ({:.4}..{:.4})",
            self.wall_s, self.wall_min_s, self.wall_max_s
        )
    }
}

/// The 1-minute load average (other processes compete for the cores the run uses).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The sev-snp-measure to time: the script itself, not pyenv's shim in front of it (a bash
/// script running `pyenv exec`, which costs a large part of a run and is not the tool's own
/// time); `None` when it is not installed.
fn sev_snp_measure() -> Option<PathBuf> {
    let shim = Command::new("pyenv")
        .args(["which", "sev-snp-measure"])
        .output();
    if let Some(o) = shim.ok().filter(|o| o.status.success()) {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.is_file() {
            return Some(p);
        }
    }
    let found = Command::new("sev-snp-measure").arg("--version").output();
    found.is_ok().then(|| PathBuf::from("sev-snp-measure"))
}

/// Runs `cmd` `runs` times; returns the median wall and CPU times and the last stdout.
fn time(runs: usize, mut cmd: impl FnMut() -> Command) -> anyhow::Result<(Timing, String)> {
    let mut times = Vec::new();
    let mut cpus = Vec::new();
    let mut out = String::new();
    for _ in 0..runs {
        let mut c = cmd();
        let cpu0 = children_cpu_s();
        let start = Instant::now();
        let o = c.output().with_context(|| format!("running {c:?}"))?;
        times.push(start.elapsed().as_secs_f64());
        cpus.push(children_cpu_s() - cpu0);
        if !o.status.success() {
            bail!("{c:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    }
    Ok((
        Timing {
            wall_s: median(times.clone()),
            wall_min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
            wall_max_s: times.iter().copied().fold(0.0, f64::max),
            cpu_s: median(cpus).max(0.01),
        },
        out,
    ))
}

fn sha384_floor_mibps() -> anyhow::Result<f64> {
    let o = Command::new("openssl")
        .args([
            "speed", "-mr", "-evp", "sha384", "-bytes", "16384", "-seconds", "2",
        ])
        .output()
        .context("running openssl speed (apt-get install openssl)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("+F:"))
        .context("openssl speed printed no +F: line")?;
    let bytes_per_s: f64 = line
        .rsplit(':')
        .next()
        .unwrap_or("")
        .parse()
        .context("openssl speed value")?;
    Ok(bytes_per_s / MIB)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 2 && args[0] == "--write-inputs" {
        let dir = PathBuf::from(&args[1]);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_inputs(&dir)?;
        println!("inputs written to {}", dir.display());
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let veil = exe
        .parent()
        .context("bench binary has a directory")?
        .join("veil");
    if !veil.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --bins` first",
            veil.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("veil-measure-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let Inputs {
        small,
        large,
        kernel,
        initrd,
    } = write_inputs(&dir)?;
    let s = |p: &Path| p.display().to_string();
    let oracle = sev_snp_measure();
    println!(
        "load_average_1min={} cores={} sev_snp_measure={}",
        load_average(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        oracle
            .as_deref()
            .map_or("not installed".into(), |p| p.display().to_string())
    );

    let floor = sha384_floor_mibps()?;
    println!("sha384_floor_mibps={floor:.1} (openssl speed -evp sha384, 16 KiB blocks, one core)");
    type Case<'a> = (&'a str, Vec<String>, Vec<String>, u64);
    let cases: Vec<Case<'_>> = vec![
        (
            "direct-boot",
            vec![
                "--firmware".into(),
                s(&small),
                "--kernel".into(),
                s(&kernel),
                "--initramfs".into(),
                s(&initrd),
                "--cmdline".into(),
                "console=ttyS0".into(),
            ],
            vec![
                "--ovmf".into(),
                s(&small),
                "--kernel".into(),
                s(&kernel),
                "--initrd".into(),
                s(&initrd),
                "--append".into(),
                "console=ttyS0".into(),
            ],
            (4 + 8 + 64) << 20,
        ),
        (
            "large-image",
            vec!["--firmware".into(), s(&large)],
            vec!["--ovmf".into(), s(&large)],
            64 << 20,
        ),
    ];
    for (name, veil_args, oracle_args, bytes) in cases {
        let (t_veil, d_veil) = time(7, || {
            let mut c = Command::new(&veil);
            c.args([
                "measure",
                "--platform",
                "sev-snp",
                "--cpus",
                "4",
                "--cpu-type",
                "EPYC-Milan",
            ])
            .args(&veil_args);
            c
        })?;
        let mib = bytes as f64 / MIB;
        let mibps = mib / t_veil.wall_s;
        let cpu_mibps = mib / t_veil.cpu_s;
        println!(
            "{name}: payload_mib={mib:.0} veil_wall_s={} veil_cpu_s={:.2} measure_mibps={mibps:.1} \
             ratio_vs_sha384_floor={:.2} (per CPU-second: {cpu_mibps:.1} MiB/s, {:.2}x)",
            t_veil.wall(),
            t_veil.cpu_s,
            mibps / floor,
            cpu_mibps / floor
        );
        if let Some(oracle) = &oracle {
            let (t_py, d_py) = time(5, || {
                let mut c = Command::new(oracle);
                c.args(["--mode", "snp", "--vcpus", "4", "--vcpu-type", "EPYC-Milan"])
                    .args(&oracle_args);
                c
            })?;
            if d_py != d_veil {
                bail!("{name}: digests differ: veil {d_veil}, sev-snp-measure {d_py}");
            }
            println!(
                "{name}: sev_snp_measure_wall_s={} sev_snp_measure_mibps={:.1} \
                 ratio_vs_sev_snp_measure={:.1} (per CPU-second: {:.1}x; digests agree)",
                t_py.wall(),
                mib / t_py.wall_s,
                t_py.wall_s / t_veil.wall_s,
                t_py.cpu_s / t_veil.cpu_s
            );
        } else {
            println!("{name}: sev-snp-measure not installed; no comparison");
        }
    }
    println!("load_average_1min={} (after)", load_average());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
