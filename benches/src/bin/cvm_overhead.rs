//! Encrypted-memory overhead (issue 5): the probe's `membw`, `memlat` and `blkbench` workloads
//! under each platform, `--runs` times, median and spread.
//!
//! ```text
//! cvm_overhead [--runs N] [--veil PATH] [--cvm-arg ARG]...
//! ```
//!
//! `none` (plain KVM) always runs, and so does `gmem`: a plain guest on the confidential memory
//! layout (`--guest-memfd`: guest_memfd slots, devices on the shared view with ACCESS_PLATFORM),
//! which separates what the layout costs from what encryption costs. For `sev-snp` and `tdx`
//! the harness first asks `veil_launch::host::HostCapabilities::probe().check(platform)`; on a
//! host that lacks the platform it prints every missing piece instead of the column. On a
//! capable host it runs `veil run --platform <p>` with the same workloads (`--cvm-arg` passes
//! extra arguments such as `--igvm FILE` to those runs). Every column prints its ratio to
//! `none`. (The net workload needs a tap and a peer: see `dev_bench`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use veil_benches::{count_arg, in_scratch_dir, median, number_after, run_measured};
use veil_launch::host::{HostCapabilities, Platform};

/// Guest RAM for every run.
const MEMORY: &str = "512M";
/// The memory workloads and their buffer (MiB).
const MEM_CMDLINE: &str = "probe.run=membw,memlat probe.buf=64";
/// The block workload (plain KVM only).
const BLK_CMDLINE: &str = "probe.run=blkbench probe.blk_qd=32 probe.blk_bs=4096 probe.blk_pattern=randread probe.blk_ops=20000";

/// A figure a run reports: `(label, key after "PROBE info ")`.
const MEM_FIGURES: [(&str, &str); 2] = [
    ("membw bytes/kcycle", "membw_bytes_per_kcycle="),
    ("memlat cycles/load", "memlat_cycles_per_load="),
];

struct Config {
    runs: usize,
    veil: PathBuf,
    cvm_args: Vec<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cvm_overhead: error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_args() -> Result<Config> {
    let mut cfg = Config {
        runs: 5,
        veil: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("veil")))
            .unwrap_or_else(|| PathBuf::from("veil")),
        cvm_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => cfg.runs = count_arg("--runs", &value()?)?,
            "--veil" => cfg.veil = value()?.into(),
            "--cvm-arg" => cfg.cvm_args.push(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(cfg)
}

/// Median and spread ((max - min) / median) of `values`.
fn summary(values: &[f64]) -> (f64, f64) {
    let med = median(values).unwrap_or(f64::NAN);
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (med, (max - min) / med)
}

/// One column of the table: a name, the platform and the extra `veil run` arguments.
struct Column {
    name: &'static str,
    platform: Platform,
    args: Vec<String>,
}

/// Runs `veil run` with `cmdline` for `col` `runs` times; returns, per key, the values.
fn runs(
    cfg: &Config,
    col: &Column,
    cmdline: &str,
    keys: &[&str],
    scratch: &Path,
) -> Result<Vec<Vec<f64>>> {
    let platform = col.name;
    let mut out = vec![Vec::new(); keys.len()];
    for i in 0..cfg.runs {
        let mut cmd = Command::new(&cfg.veil);
        cmd.args(["run", "--memory", MEMORY, "--platform"])
            .arg(col.platform.to_string())
            .arg("--cmdline")
            .arg(cmdline)
            .args(&col.args);
        if cmdline.contains("blkbench") {
            cmd.arg("--disk")
                .arg(format!("path={}", scratch.join("disk.img").display()));
        }
        let dir = scratch.join(format!("{platform}-{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let m = run_measured(cmd, &dir)?;
        if !m.status.success() || !m.stdout.contains("PROBE PASS") {
            bail!(
                "{platform}: the probe did not pass ({}):\n{}\n{}",
                m.status,
                m.stdout.trim_end(),
                m.stderr.trim_end()
            );
        }
        for (k, v) in keys.iter().zip(out.iter_mut()) {
            let key = format!("PROBE info {k}");
            v.push(number_after(&m.stdout, &key).with_context(|| format!("{platform}: no {k}"))?);
        }
    }
    Ok(out)
}

fn run() -> Result<()> {
    let cfg = parse_args()?;
    in_scratch_dir("cvm-overhead", |scratch| bench(&cfg, scratch))
}

/// Runs the memory and block workloads for `col`: per figure, (median, spread).
fn column(cfg: &Config, col: &Column, scratch: &Path) -> Result<Vec<(f64, f64)>> {
    let keys: Vec<&str> = MEM_FIGURES.iter().map(|(_, k)| *k).collect();
    let mem = runs(cfg, col, MEM_CMDLINE, &keys, scratch)?;
    let mut out: Vec<(f64, f64)> = mem.iter().map(|v| summary(v)).collect();
    let blk = runs(
        cfg,
        col,
        BLK_CMDLINE,
        &["blkbench_ops=", "blkbench_cycles="],
        scratch,
    )?;
    let per_op: Vec<f64> = blk[1].iter().zip(&blk[0]).map(|(c, o)| c / o).collect();
    out.push(summary(&per_op));
    Ok(out)
}

fn bench(cfg: &Config, scratch: &Path) -> Result<()> {
    let image = scratch.join("disk.img");
    std::fs::write(&image, vec![0x5au8; 64 << 20])
        .with_context(|| format!("writing {}", image.display()))?;
    let labels = [MEM_FIGURES[0].0, MEM_FIGURES[1].0, "blkbench qd32 cyc/op"];
    println!(
        "cvm_overhead: {} runs per column, median (spread = (max-min)/median), ratio to none",
        cfg.runs
    );
    let mut columns = vec![
        Column {
            name: "none",
            platform: Platform::None,
            args: Vec::new(),
        },
        Column {
            name: "gmem",
            platform: Platform::None,
            args: vec!["--guest-memfd".into()],
        },
    ];
    let host = HostCapabilities::probe();
    for (name, platform) in [("sev-snp", Platform::SevSnp), ("tdx", Platform::Tdx)] {
        match host.check(platform) {
            Ok(()) => columns.push(Column {
                name,
                platform,
                args: cfg.cvm_args.clone(),
            }),
            Err(missing) => println!("{name:<8} column absent: {missing}"),
        }
    }
    let mut base = Vec::new();
    for col in &columns {
        let figures = column(cfg, col, scratch)?;
        if col.platform == Platform::None && col.args.is_empty() {
            base = figures.iter().map(|(med, _)| *med).collect();
        }
        for ((label, (med, spread)), b) in labels.iter().zip(&figures).zip(&base) {
            println!(
                "{:<8} {label:<22} {med:>12.3}  spread {:>5.1}%  {:.3}x none",
                col.name,
                spread * 100.0,
                med / b
            );
        }
    }
    Ok(())
}
