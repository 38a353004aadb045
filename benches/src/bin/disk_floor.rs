//! The host's own limit for random block reads (see `veil_benches::disk_floor`).
//!
//! ```text
//! disk_floor [--mib M] [--ops N] [--bs B] [--rounds R] [--file PATH] [--qd Q,...]
//! ```
//!
//! Without `--file`, writes a `--mib` MiB (default 256) image in a scratch directory like
//! `dev_bench` does. For each queue depth (default 1 and 32) and each mode (page cache,
//! O_DIRECT) it reads `--ops` random `--bs`-byte blocks (default 20000 of 4096) `--rounds`
//! times (default 5, after one uncounted run) through one io_uring, and prints the median and
//! the spread of the IOPS.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use veil_benches::disk_floor::measure;
use veil_benches::{count_arg, in_scratch_dir, make_image, median};

fn main() {
    if let Err(e) = run() {
        eprintln!("disk_floor: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut mib = 256u64;
    let mut ops = 20_000u64;
    let mut bs = 4096u64;
    let mut rounds = 5usize;
    let mut file: Option<PathBuf> = None;
    let mut qds = vec![1u32, 32];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--mib" => mib = count_arg("--mib", &value()?)? as u64,
            "--ops" => ops = count_arg("--ops", &value()?)? as u64,
            "--bs" => {
                bs = count_arg("--bs", &value()?)? as u64;
                if bs % 512 != 0 {
                    bail!("--bs {bs}: not a multiple of 512 (O_DIRECT needs it)");
                }
            }
            "--rounds" => rounds = count_arg("--rounds", &value()?)?,
            "--file" => file = Some(value()?.into()),
            "--qd" => {
                let v = value()?;
                qds = v
                    .split(',')
                    .map(|q| count_arg("--qd", q).map(|n| n as u32))
                    .collect::<Result<_>>()?;
                if let Some(q) = qds.iter().find(|&&q| q > 1024) {
                    bail!("--qd {q}: at most 1024");
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    in_scratch_dir("disk-floor", |scratch| {
        let path = match &file {
            Some(p) => p.clone(),
            None => {
                let p = scratch.join("disk.img");
                make_image(&p, mib)?;
                p
            }
        };
        println!(
            "disk_floor: {} ({bs}-byte random reads, {ops} per run, {rounds} runs)",
            path.display()
        );
        for &qd in &qds {
            for direct in [false, true] {
                let mut iops = Vec::new();
                let mut lat = Vec::new();
                // One uncounted run first: the host may have evicted the file from its page
                // cache (proactive reclaim runs here).
                measure(&path, direct, qd, bs, ops)?;
                for _ in 0..rounds {
                    let f = measure(&path, direct, qd, bs, ops)?;
                    iops.push(f.iops);
                    lat.push(f.mean_us);
                }
                let (lo, hi) = iops
                    .iter()
                    .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                println!(
                    "qd {qd:>4} {:<10} {:>10.0} IOPS (min {lo:.0}, max {hi:.0}), {:.1} us per read",
                    if direct { "O_DIRECT" } else { "page cache" },
                    median(&iops).unwrap_or(f64::NAN),
                    median(&lat).unwrap_or(f64::NAN)
                );
            }
        }
        Ok(())
    })
}
