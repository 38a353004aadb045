//! Device benchmark: Veil vs QEMU driving the same virtio-blk-pci disk from the same probe guest.
//!
//! ```text
//! dev_bench [--rounds N] [--mib M] [--veil PATH] [--qemu PATH] [--only NAME,...]
//! (root: the net cases create a tap)
//! ```
//!
//! Creates a raw image of `--mib` MiB (default 256) filled with data in a scratch directory (so
//! it starts in the page cache) and runs the probe's `blkbench` workload under both VMMs, one
//! case at a time, `--rounds` times (default 5) in alternating order after one uncounted warm-up
//! of each peer. The probe reports TSC cycles from its first notification to its last
//! completion; the harness converts them with the host TSC rate it measures itself (KVM guests
//! see the host TSC unscaled here). VMM CPU per request is the child's `utime + stime` (from
//! `wait4`) over the requests: it includes the boot and the vCPU thread, which spins in the
//! guest's polling loop, so it is an upper bound on the device-side cost, equal for both peers.
//! Each round of a random-read case also measures the host's own limit for random reads of
//! the same file (`veil_benches::disk_floor`: one io_uring at the same queue depth, no VM), so
//! the report can say how close each VMM gets to what the host disk allows.
//! The cases (virtio-blk-pci, one queue; QEMU `-M microvm,pcie=on`):
//! - `randread_4k_qd1` / `randread_4k_qd32`: page cache (Veil default, QEMU
//!   `cache=writeback,aio=threads`);
//! - `randread_4k_qd1_direct` / `randread_4k_qd32_direct`: O_DIRECT (Veil `direct=on`, QEMU
//!   `cache=none,aio=io_uring`);
//! - `seqwrite_128k_qd8`: page cache, MiB/s;
//! - `net_tx_1514` / `net_tx_60`: the probe's `netbench` sending broadcast frames through
//!   virtio-net-pci to a tap (`veilbench0`, created and removed here; QEMU `-netdev tap` without
//!   vhost); MiB/s and frames/s, and the tap's `rx_packets` must have grown by every frame.
//!
//! vsock is not compared: QEMU's virtio-vsock needs vhost-vsock, which this host lacks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use veil_benches::{
    Measured, count_arg, disk_floor, in_scratch_dir, make_image, median, number_after, run_measured,
};

/// Guest RAM for both peers.
const MEMORY: &str = "512M";

/// One workload.
struct Case {
    name: &'static str,
    qd: u32,
    bs: u64,
    pattern: &'static str,
    ops: u64,
    direct: bool,
    /// A virtio-net transmit case (`bs` is the frame length, `ops` the frames), not blk.
    net: bool,
    /// The goal for Veil/QEMU, if issue 3 sets one.
    goal: Option<f64>,
}

const CASES: [Case; 7] = [
    Case {
        name: "randread_4k_qd1",
        qd: 1,
        bs: 4096,
        pattern: "randread",
        ops: 4000,
        direct: false,
        net: false,
        goal: Some(1.0),
    },
    Case {
        name: "randread_4k_qd32",
        qd: 32,
        bs: 4096,
        pattern: "randread",
        ops: 40_000,
        direct: false,
        net: false,
        goal: Some(1.5),
    },
    Case {
        name: "randread_4k_qd1_direct",
        qd: 1,
        bs: 4096,
        pattern: "randread",
        ops: 3000,
        direct: true,
        net: false,
        goal: Some(1.0),
    },
    Case {
        name: "randread_4k_qd32_direct",
        qd: 32,
        bs: 4096,
        pattern: "randread",
        ops: 30_000,
        direct: true,
        net: false,
        goal: Some(1.5),
    },
    Case {
        name: "seqwrite_128k_qd8",
        qd: 8,
        bs: 128 << 10,
        pattern: "seqwrite",
        ops: 2048,
        direct: false,
        net: false,
        goal: None,
    },
    Case {
        name: "net_tx_1514",
        qd: 0,
        bs: 1514,
        pattern: "tx",
        ops: 200_000,
        direct: false,
        net: true,
        goal: Some(1.2),
    },
    Case {
        name: "net_tx_60",
        qd: 0,
        bs: 60,
        pattern: "tx",
        ops: 200_000,
        direct: false,
        net: true,
        goal: Some(1.2),
    },
];
/// The tap both VMMs send to (created and removed by the harness).
const TAP: &str = "veilbench0";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Veil,
    Qemu,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Veil => "veil",
            Peer::Qemu => "qemu",
        }
    }
}

struct Config {
    rounds: usize,
    mib: u64,
    veil: PathBuf,
    qemu: PathBuf,
    only: Option<Vec<String>>,
}

/// One run's figures.
struct Sample {
    /// Requests per second.
    iops: f64,
    /// VMM CPU microseconds per request.
    cpu_us: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("dev_bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_args() -> Result<Config> {
    let exe = std::env::current_exe().ok();
    let mut cfg = Config {
        rounds: 5,
        mib: 256,
        veil: exe
            .as_deref()
            .and_then(Path::parent)
            .map(|d| d.join("veil"))
            .unwrap_or_else(|| PathBuf::from("veil")),
        qemu: PathBuf::from("qemu-system-x86_64"),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => cfg.rounds = count_arg("--rounds", &value()?)?,
            "--mib" => {
                let v = value()?;
                cfg.mib = v.parse().with_context(|| format!("--mib {v}"))?;
                if !(16..=4096).contains(&cfg.mib) {
                    bail!("--mib takes 16..=4096, not {v}");
                }
            }
            "--veil" => cfg.veil = value()?.into(),
            "--qemu" => cfg.qemu = value()?.into(),
            "--only" => {
                let names: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                if let Some(bad) = names.iter().find(|n| !CASES.iter().any(|c| c.name == *n)) {
                    bail!("--only: no case named {bad}");
                }
                cfg.only = Some(names);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(cfg)
}

fn run() -> Result<()> {
    let cfg = parse_args()?;
    in_scratch_dir("dev-bench", |scratch| with_tap(&cfg, scratch))
}

/// Runs the cases with the tap device the net cases need made for them (and removed after).
fn with_tap(cfg: &Config, scratch: &Path) -> Result<()> {
    let net = CASES.iter().any(|c| {
        c.net
            && cfg
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == c.name))
    });
    if net {
        ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    }
    let result = if net {
        ip(&["link", "set", TAP, "up"]).and_then(|()| bench(cfg, scratch))
    } else {
        bench(cfg, scratch)
    };
    if net {
        let _ = ip(&["link", "del", TAP]);
    }
    result
}

/// The host TSC rate, Hz: rdtsc against the monotonic clock over 200 ms.
fn tsc_hz() -> f64 {
    let t0 = Instant::now();
    // SAFETY: RDTSC has no memory effects.
    let c0 = unsafe { core::arch::x86_64::_rdtsc() };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    let c1 = unsafe { core::arch::x86_64::_rdtsc() };
    c1.wrapping_sub(c0) as f64 / t0.elapsed().as_secs_f64()
}

fn cmdline(case: &Case) -> String {
    if case.net {
        return format!(
            "probe.run=netbench probe.net_frames={} probe.net_len={}",
            case.ops, case.bs
        );
    }
    format!(
        "probe.run=blkbench probe.blk_qd={} probe.blk_bs={} probe.blk_pattern={} probe.blk_ops={}",
        case.qd, case.bs, case.pattern, case.ops
    )
}

fn command(cfg: &Config, peer: Peer, case: &Case, image: &Path, elf: &Path) -> Command {
    match peer {
        Peer::Veil => {
            let mut c = Command::new(&cfg.veil);
            let disk = format!(
                "path={}{}",
                image.display(),
                if case.direct { ",direct=on" } else { "" }
            );
            c.args(["run", "--memory", MEMORY, "--transport", "pci"]);
            if case.net {
                c.arg("--net").arg(format!("tap={TAP}"));
            } else {
                c.arg("--disk").arg(disk);
            }
            c.arg("--cmdline").arg(cmdline(case));
            c
        }
        Peer::Qemu => {
            let mut c = Command::new(&cfg.qemu);
            let mode = if case.direct {
                "cache=none,aio=io_uring"
            } else {
                "cache=writeback,aio=threads"
            };
            c.args([
                "-M",
                "microvm,pcie=on,acpi=on",
                "-accel",
                "kvm",
                "-m",
                MEMORY,
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-serial",
                "stdio",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-kernel",
            ])
            .arg(elf)
            .arg("-append")
            .arg(cmdline(case));
            if case.net {
                c.arg("-netdev")
                    .arg(format!("tap,id=n0,ifname={TAP},script=no,downscript=no"))
                    .args(["-device", "virtio-net-pci,netdev=n0,disable-legacy=on"]);
            } else {
                c.arg("-drive")
                    .arg(format!(
                        "file={},if=none,id=d0,format=raw,{mode}",
                        image.display()
                    ))
                    .args(["-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]);
            }
            c
        }
    }
}

/// Checks the run passed and turns its figures into a sample.
fn sample(peer: Peer, case: &Case, m: &Measured, hz: f64) -> Result<Sample> {
    let out = &m.stdout;
    let check = if case.net { "netbench" } else { "blkbench" };
    let passed = out.contains(&format!("PROBE ok {check}")) && out.contains("PROBE PASS");
    if !passed {
        bail!(
            "{} {}: the probe did not pass ({}):\n{}\n{}",
            peer.name(),
            case.name,
            m.status,
            out.trim_end(),
            m.stderr.trim_end()
        );
    }
    let ops_key = if case.net { "frames" } else { "ops" };
    let ops = number_after(out, &format!("PROBE info {check}_{ops_key}="))
        .with_context(|| format!("{} {}: no {check}_{ops_key}", peer.name(), case.name))?;
    let cycles = number_after(out, &format!("PROBE info {check}_cycles="))
        .with_context(|| format!("{} {}: no {check}_cycles", peer.name(), case.name))?;
    if ops <= 0.0 || cycles <= 0.0 {
        bail!("{} {}: no requests timed", peer.name(), case.name);
    }
    Ok(Sample {
        iops: ops / (cycles / hz),
        cpu_us: m.cpu.as_secs_f64() * 1e6 / ops,
    })
}

fn bench(cfg: &Config, scratch: &Path) -> Result<()> {
    let image = scratch.join("disk.img");
    make_image(&image, cfg.mib)?;
    let elf = scratch.join("probe.elf");
    std::fs::write(&elf, veil_vmm::probe_image::PROBE_ELF)
        .with_context(|| format!("writing {}", elf.display()))?;
    let hz = tsc_hz();
    println!(
        "dev_bench: {} rounds, {} MiB image in {}, host TSC {:.0} MHz",
        cfg.rounds,
        cfg.mib,
        scratch.display(),
        hz / 1e6
    );
    println!(
        "{:<26} {:>12} {:>12} {:>7} {:>10} {:>10}",
        "case", "veil", "qemu", "ratio", "veil cpu", "qemu cpu"
    );
    let mut result = Vec::new();
    let mut met = true;
    for case in CASES.iter().filter(|c| {
        cfg.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == c.name))
    }) {
        let mut got: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        // The host's own limit for such reads (no guest, no VMM): disk_floor.
        let mut host = Vec::new();
        for round in 0..=cfg.rounds {
            let order = if round % 2 == 0 {
                [Peer::Veil, Peer::Qemu]
            } else {
                [Peer::Qemu, Peer::Veil]
            };
            for peer in order {
                let run_dir = scratch.join(format!("{}-{}-{round}", case.name, peer.name()));
                std::fs::create_dir_all(&run_dir)
                    .with_context(|| format!("creating {}", run_dir.display()))?;
                let before = if case.net { tap_rx_packets()? } else { 0 };
                let m = run_measured(command(cfg, peer, case, &image, &elf), &run_dir)?;
                let s = sample(peer, case, &m, hz)?;
                if case.net {
                    let got = tap_rx_packets()? - before;
                    if got < case.ops {
                        bail!(
                            "{} {}: the tap received {got} of {} frames",
                            peer.name(),
                            case.name,
                            case.ops
                        );
                    }
                }
                if round > 0 {
                    got[usize::from(peer == Peer::Qemu)].push(s);
                }
            }
            if round > 0 && case.pattern == "randread" {
                let f = disk_floor::measure(&image, case.direct, case.qd, case.bs, case.ops)?;
                host.push(f.iops);
            }
        }
        let med = |i: usize, f: fn(&Sample) -> f64| {
            median(&got[i].iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let per_s = |s: &Sample| s.iops;
        let (veil, qemu) = if case.pattern == "seqwrite" || case.net {
            let mib = case.bs as f64 / f64::from(1 << 20);
            (med(0, per_s) * mib, med(1, per_s) * mib)
        } else {
            (med(0, per_s), med(1, per_s))
        };
        let unit = if case.pattern == "seqwrite" || case.net {
            "MiB/s"
        } else {
            "IOPS"
        };
        if case.net {
            println!(
                "{:<26} {:>12.0} {:>12.0} {:>6.2}x  frames/s",
                case.name,
                med(0, per_s),
                med(1, per_s),
                med(0, per_s) / med(1, per_s)
            );
        }
        let ratio = veil / qemu;
        let (vcpu, qcpu) = (med(0, |s| s.cpu_us), med(1, |s| s.cpu_us));
        let goal = match case.goal {
            Some(g) if ratio >= g => format!("goal >= {g:.1}x met"),
            Some(g) => {
                met = false;
                format!("goal >= {g:.1}x MISSED")
            }
            None => String::new(),
        };
        println!(
            "{:<26} {:>12.0} {:>12.0} {:>6.2}x {:>8.2}us {:>8.2}us  {unit}, cpu per request; {goal}",
            case.name, veil, qemu, ratio, vcpu, qcpu
        );
        if let Some(h) = median(&host) {
            println!(
                "{:<26} {:>12.0} {:>12} {:>7}  host floor IOPS (io_uring, no VM): veil {:.0}%, qemu {:.0}% of it",
                "",
                h,
                "",
                "",
                veil / h * 100.0,
                qemu / h * 100.0
            );
        }
        let spread = |i: usize| {
            got[i].iter().fold((f64::MAX, 0f64), |(lo, hi), s| {
                (lo.min(s.iops), hi.max(s.iops))
            })
        };
        let ((vlo, vhi), (qlo, qhi)) = (spread(0), spread(1));
        println!(
            "{:<26} spread (requests or frames/s) veil {vlo:.0}-{vhi:.0}, qemu {qlo:.0}-{qhi:.0}",
            ""
        );
        result.push(format!("{}={ratio:.2}", case.name));
    }
    println!(
        "RESULT dev_bench veil/qemu {} goals={}",
        result.join(" "),
        if met { "met" } else { "missed" }
    );
    println!("vsock: not compared (QEMU needs vhost-vsock); Veil alone: vsock_bench");
    Ok(())
}

/// Frames the tap received from its VMM so far.
fn tap_rx_packets() -> Result<u64> {
    let path = format!("/sys/class/net/{TAP}/statistics/rx_packets");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path} holds {text:?}"))
}

/// Runs `ip` with `args`, failing with its output.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
