//! The probe's command line: `probe.run=<checks>`, `probe.loop=<n>`, `probe.buf=<MiB>`.

/// Checks and workloads the probe knows, in the order it runs them.
pub const CHECKS: [&str; 7] = ["boot", "mem", "smp", "ring3", "loop", "membw", "memlat"];
/// What runs when the command line has no `probe.run=`.
pub const DEFAULT_RUN: [&str; 4] = ["boot", "mem", "smp", "ring3"];

/// The parsed command line.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `run[i]` is set when `CHECKS[i]` was chosen.
    pub run: [bool; CHECKS.len()],
    /// Iterations of the `loop` workload.
    pub loop_iters: u64,
    /// Buffer size for `membw` and `memlat`, in bytes.
    pub buf_bytes: u64,
}

impl Config {
    /// Whether check `name` was chosen.
    pub fn runs(&self, name: &str) -> bool {
        CHECKS
            .iter()
            .position(|c| *c == name)
            .is_some_and(|i| self.run[i])
    }
}

/// Why the command line was rejected.
#[derive(Debug)]
pub enum Error<'a> {
    /// A token the probe does not know.
    UnknownToken(&'a str),
    /// A `probe.run=` entry that names no check.
    UnknownCheck(&'a str),
    /// A `probe.run=` that names no check.
    NoChecks(&'a str),
    /// A number that does not parse or is out of range.
    BadNumber(&'a str),
}

impl core::fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::UnknownToken(t) => write!(f, "unknown token '{t}'"),
            Error::UnknownCheck(t) => write!(f, "unknown check '{t}' in probe.run"),
            Error::NoChecks(t) => write!(f, "'{t}' names no check"),
            Error::BadNumber(t) => write!(f, "bad number in '{t}'"),
        }
    }
}

fn number(value: &str, min: u64, max: u64) -> Option<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// Parses whitespace-separated tokens.
pub fn parse(line: &str) -> Result<Config, Error<'_>> {
    let mut cfg = Config {
        run: [false; CHECKS.len()],
        loop_iters: 100_000_000,
        buf_bytes: 64 << 20,
    };
    let mut chose = false;
    for token in line.split_ascii_whitespace() {
        if let Some(list) = token.strip_prefix("probe.run=") {
            chose = true;
            if list.split(',').all(str::is_empty) {
                return Err(Error::NoChecks(token));
            }
            for name in list.split(',').filter(|n| !n.is_empty()) {
                let i = CHECKS
                    .iter()
                    .position(|c| *c == name)
                    .ok_or(Error::UnknownCheck(name))?;
                cfg.run[i] = true;
            }
        } else if let Some(v) = token.strip_prefix("probe.loop=") {
            cfg.loop_iters = number(v, 1, 1 << 40).ok_or(Error::BadNumber(token))?;
        } else if let Some(v) = token.strip_prefix("probe.buf=") {
            let mib = number(v, 1, 1 << 16).ok_or(Error::BadNumber(token))?;
            cfg.buf_bytes = mib << 20;
        } else {
            return Err(Error::UnknownToken(token));
        }
    }
    if !chose {
        for name in DEFAULT_RUN {
            if let Some(i) = CHECKS.iter().position(|c| *c == name) {
                cfg.run[i] = true;
            }
        }
    }
    Ok(cfg)
}
