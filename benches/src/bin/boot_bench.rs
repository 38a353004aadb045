//! Boot benchmark: Veil, QEMU microvm and the KVM floor booting the same guest, side by side.
//!
//! ```text
//! boot_bench [--runs N] [--guest probe|tiny] [--veil PATH] [--qemu PATH] [--floor PATH]
//!            [--skip veil,qemu,floor]
//! ```
//!
//! Each round runs every peer once, in an order that rotates from round to round, after one
//! warm-up round that is not counted. For each run it measures the whole process from exec to
//! exit (wall time) and the child's peak RSS (`ru_maxrss` from `wait4`: guest pages the process
//! touched count), checks that the guest really ran (status and console), and reads Veil's own
//! `start_to_guest_ms` from `veil run --boot-timer`. It prints medians and the ratios to the
//! floor and to QEMU. The peers:
//! - `floor-io`: `kvm_floor <guest>`: VM, slot, vCPU, run to the guest's first port write;
//! - `floor`: `kvm_floor <guest> --until exit`: the same guest run to its debug exit;
//! - `qemu`: `qemu-system-x86_64 -M microvm ... -kernel <guest>` with `isa-debug-exit` at 0xf4;
//! - `veil`: `veil run --boot-timer --kernel <guest>`.
//!
//! The guest is the probe guest embedded in `veil_vmm` (default) or a three-instruction PVH
//! guest (`--guest tiny`), written to a scratch directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use veil_benches::{
    Measured, count_arg, harness_anon_rss_kib, in_scratch_dir, median, number_after, run_measured,
    tiny_pvh_elf,
};

/// Guest RAM for every peer, MiB (only touched pages count toward RSS).
const MEMORY_MIB: u32 = 128;
/// Command line for the probe guest: only the boot check.
const PROBE_CMDLINE: &str = "probe.run=boot";
/// Veil's exec-to-exit goal relative to the floor running the same guest.
const GOAL_FLOOR_RATIO: f64 = 2.0;
/// Veil's peak RSS goal, MiB, guest pages included.
const GOAL_RSS_MIB: f64 = 4.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    FloorIo,
    Floor,
    Qemu,
    Veil,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::FloorIo => "floor-io",
            Peer::Floor => "floor",
            Peer::Qemu => "qemu",
            Peer::Veil => "veil",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Peer::FloorIo => "KVM floor, exec to the guest's first port write",
            Peer::Floor => "KVM floor, exec to the guest's debug exit",
            Peer::Qemu => "QEMU microvm, exec to exit",
            Peer::Veil => "veil run, exec to exit",
        }
    }
}

struct Config {
    runs: usize,
    tiny: bool,
    veil: PathBuf,
    qemu: PathBuf,
    floor: PathBuf,
    peers: Vec<Peer>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("boot_bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn parse_args() -> Result<Config> {
    let mut cfg = Config {
        runs: 10,
        tiny: false,
        veil: sibling("veil"),
        qemu: PathBuf::from("qemu-system-x86_64"),
        floor: sibling("kvm_floor"),
        peers: vec![Peer::FloorIo, Peer::Floor, Peer::Qemu, Peer::Veil],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => cfg.runs = count_arg("--runs", &value()?)?,
            "--guest" => {
                cfg.tiny = match value()?.as_str() {
                    "probe" => false,
                    "tiny" => true,
                    other => bail!("--guest takes probe or tiny, not {other}"),
                }
            }
            "--veil" => cfg.veil = value()?.into(),
            "--qemu" => cfg.qemu = value()?.into(),
            "--floor" => cfg.floor = value()?.into(),
            "--skip" => {
                for name in value()?.split(',') {
                    match name {
                        "veil" => cfg.peers.retain(|p| *p != Peer::Veil),
                        "qemu" => cfg.peers.retain(|p| *p != Peer::Qemu),
                        "floor" => cfg
                            .peers
                            .retain(|p| !matches!(p, Peer::Floor | Peer::FloorIo)),
                        other => bail!("--skip takes veil, qemu or floor, not {other}"),
                    }
                }
            }
            other => bail!(
                "unknown argument {other}; usage: boot_bench [--runs N] [--guest probe|tiny] \
                 [--veil PATH] [--qemu PATH] [--floor PATH] [--skip veil,qemu,floor]"
            ),
        }
    }
    Ok(cfg)
}

fn command(cfg: &Config, peer: Peer, guest: &Path) -> Command {
    let mem = MEMORY_MIB.to_string();
    match peer {
        Peer::FloorIo | Peer::Floor => {
            let mut c = Command::new(&cfg.floor);
            c.arg(guest).args(["--memory-mib", &mem]);
            if peer == Peer::Floor {
                c.args(["--until", "exit"]);
            }
            c
        }
        Peer::Qemu => {
            let mut c = Command::new(&cfg.qemu);
            c.args(["-M", "microvm", "-accel", "kvm", "-smp", "1"])
                .args(["-m", &format!("{mem}M")])
                .args(["-nodefaults", "-no-user-config", "-nographic"])
                .args(["-serial", "stdio"])
                .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
                .arg("-kernel")
                .arg(guest);
            if !cfg.tiny {
                c.args(["-append", PROBE_CMDLINE]);
            }
            c
        }
        Peer::Veil => {
            let mut c = Command::new(&cfg.veil);
            c.args([
                "run",
                "--boot-timer",
                "--cpus",
                "1",
                "--memory",
                &format!("{mem}M"),
            ])
            .args(["--serial", "stdio", "--kernel"])
            .arg(guest);
            if !cfg.tiny {
                c.args(["--cmdline", PROBE_CMDLINE]);
            }
            c
        }
    }
}

/// Checks that the run did what the peer should: the right status and, for full runs of the
/// probe, `PROBE PASS` on the console.
fn check(cfg: &Config, peer: Peer, m: &Measured) -> Result<()> {
    // QEMU's isa-debug-exit turns the guest's 0 into (0 << 1) | 1.
    let want = if peer == Peer::Qemu { 1 } else { 0 };
    if m.status.code() != Some(want) {
        bail!(
            "{} ended with {:?} (wanted exit status {want})\nstdout:\n{}\nstderr:\n{}",
            peer.name(),
            m.status,
            m.stdout,
            m.stderr
        );
    }
    if !cfg.tiny && peer != Peer::FloorIo && !m.stdout.contains("PROBE PASS") {
        bail!(
            "{}: no PROBE PASS on the console\nstdout:\n{}\nstderr:\n{}",
            peer.name(),
            m.stdout,
            m.stderr
        );
    }
    Ok(())
}

#[derive(Default)]
struct Samples {
    wall_ms: Vec<f64>,
    rss_mib: Vec<f64>,
    start_to_guest_ms: Vec<f64>,
}

fn run() -> Result<()> {
    let cfg = parse_args()?;
    in_scratch_dir("boot-bench", |scratch| bench(&cfg, scratch))
}

fn bench(cfg: &Config, scratch: &Path) -> Result<()> {
    let guest = scratch.join(if cfg.tiny { "tiny.elf" } else { "probe.elf" });
    let bytes = if cfg.tiny {
        tiny_pvh_elf()
    } else {
        veil_vmm::probe_image::PROBE_ELF.to_vec()
    };
    std::fs::write(&guest, bytes).with_context(|| format!("writing {}", guest.display()))?;

    let peers = &cfg.peers;
    let mut samples: Vec<Samples> = peers.iter().map(|_| Samples::default()).collect();
    println!(
        "boot_bench: {} guest, {} MiB RAM, 1 vCPU; 1 warm-up round + {} rounds, order rotating",
        if cfg.tiny {
            "three-instruction"
        } else {
            "probe"
        },
        MEMORY_MIB,
        cfg.runs
    );
    for round in 0..=cfg.runs {
        for k in 0..peers.len() {
            let i = (k + round) % peers.len();
            let peer = peers[i];
            let m = run_measured(command(cfg, peer, &guest), scratch)
                .with_context(|| format!("running {}", peer.name()))?;
            check(cfg, peer, &m)?;
            if round == 0 {
                continue; // warm-up: page cache, dynamic loader, KVM module state
            }
            let s = &mut samples[i];
            s.wall_ms.push(m.wall.as_secs_f64() * 1e3);
            s.rss_mib.push(m.max_rss_kib as f64 / 1024.0);
            if peer == Peer::FloorIo {
                // "kvm_floor: first port write (port 0x80) X ms after main"
                if let Some(v) = number_after(&m.stderr, "first port write (port 0x80)") {
                    s.start_to_guest_ms.push(v);
                }
            }
            if peer == Peer::Veil {
                let text = format!("{}\n{}", m.stdout, m.stderr);
                // `veil run --boot-timer` prints "veil: boot timer: X ms from veil's start to the
                // guest's first write to port 0x80"; a `start_to_guest_ms=X` line also counts.
                let v = number_after(&text, "start_to_guest_ms")
                    .or_else(|| number_after(&text, "boot timer:"));
                if let Some(v) = v {
                    s.start_to_guest_ms.push(v);
                }
            }
        }
    }
    report(peers, &samples);
    if let Some(kib) = harness_anon_rss_kib() {
        println!(
            "(peak RSS is ru_maxrss from wait4 after fork+exec; it cannot read below the \
             harness's anonymous RSS, now {:.2} MiB)",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

fn report(peers: &[Peer], samples: &[Samples]) {
    let med = |p: Peer, f: fn(&Samples) -> &Vec<f64>| {
        peers
            .iter()
            .position(|&q| q == p)
            .and_then(|i| median(f(&samples[i])))
    };
    let wall = |p| med(p, |s| &s.wall_ms);
    let rss = |p| med(p, |s| &s.rss_mib);
    println!();
    println!(
        "{:<9} {:>10} {:>10} {:>10} {:>13}  what",
        "peer", "wall ms", "min ms", "max ms", "peak RSS MiB"
    );
    for (p, s) in peers.iter().zip(samples) {
        let min = s.wall_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.wall_ms.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<9} {:>10.2} {:>10.2} {:>10.2} {:>13.2}  {}",
            p.name(),
            median(&s.wall_ms).unwrap_or(f64::NAN),
            min,
            max,
            median(&s.rss_mib).unwrap_or(f64::NAN),
            p.describe()
        );
    }
    println!();
    let ratio = |name: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b) {
            println!("{name:<32} {:>8.2}x", a / b);
        }
    };
    ratio(
        "veil/floor wall (same guest)",
        wall(Peer::Veil),
        wall(Peer::Floor),
    );
    ratio("veil/floor-io wall", wall(Peer::Veil), wall(Peer::FloorIo));
    ratio("veil/qemu wall", wall(Peer::Veil), wall(Peer::Qemu));
    ratio("qemu/floor wall", wall(Peer::Qemu), wall(Peer::Floor));
    ratio("veil/floor peak RSS", rss(Peer::Veil), rss(Peer::Floor));
    ratio("veil/qemu peak RSS", rss(Peer::Veil), rss(Peer::Qemu));
    let s2g = med(Peer::Veil, |s| &s.start_to_guest_ms);
    if let Some(v) = s2g {
        println!(
            "{:<32} {v:>8.2} ms (median, veil --boot-timer)",
            "veil start_to_guest_ms"
        );
    } else if peers.contains(&Peer::Veil) {
        println!("veil start_to_guest_ms: not reported by `veil run --boot-timer`");
    }
    let floor_s2g = med(Peer::FloorIo, |s| &s.start_to_guest_ms);
    if let Some(v) = floor_s2g {
        println!(
            "{:<32} {v:>8.2} ms (median, from its main)",
            "floor start_to_guest_ms"
        );
    }
    ratio("veil/floor start_to_guest_ms", s2g, floor_s2g);
    if let (Some(v), Some(f)) = (wall(Peer::Veil), wall(Peer::Floor)) {
        let r = v / f;
        let verdict = if r <= GOAL_FLOOR_RATIO {
            "met"
        } else {
            "MISSED"
        };
        println!("goal: veil within {GOAL_FLOOR_RATIO}x of the floor: {verdict} ({r:.2}x)");
    }
    if let Some(v) = rss(Peer::Veil) {
        let verdict = if v < GOAL_RSS_MIB { "met" } else { "MISSED" };
        println!("goal: veil peak RSS under {GOAL_RSS_MIB} MiB: {verdict} ({v:.2} MiB)");
    }
    // One machine-readable line for scripts and the README.
    let fmt = |v: Option<f64>| v.map_or_else(|| "na".to_string(), |v| format!("{v:.2}"));
    println!(
        "RESULT floor_io_ms={} floor_ms={} qemu_ms={} veil_ms={} veil_start_to_guest_ms={} \
         floor_start_to_guest_ms={} floor_rss_mib={} qemu_rss_mib={} veil_rss_mib={}",
        fmt(wall(Peer::FloorIo)),
        fmt(wall(Peer::Floor)),
        fmt(wall(Peer::Qemu)),
        fmt(wall(Peer::Veil)),
        fmt(s2g),
        fmt(floor_s2g),
        fmt(rss(Peer::Floor)),
        fmt(rss(Peer::Qemu)),
        fmt(rss(Peer::Veil)),
    );
}
