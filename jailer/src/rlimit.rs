//! `--resource-limit KEY=VALUE`: resource limits set (soft and hard) before the exec.

/// Open files allowed when `--resource-limit no-file` is not given (as Firecracker's jailer).
pub const DEFAULT_NO_FILE: u64 = 2048;

/// Errors from parsing and applying resource limits.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("--resource-limit {arg:?}: expected KEY=VALUE, e.g. no-file=1024")]
    Syntax { arg: String },
    #[error("--resource-limit {arg:?}: unknown resource {key:?}; known: fsize, no-file")]
    UnknownKey { arg: String, key: String },
    #[error("--resource-limit {arg:?}: {value:?} is not a whole number")]
    BadValue { arg: String, value: String },
    #[error("--resource-limit {key}: given twice")]
    Duplicate { key: &'static str },
    #[error("--resource-limit no-file={value}: above the kernel's limit fs.nr_open ({max})")]
    AboveNrOpen { value: u64, max: u64 },
    #[error("reading /proc/sys/fs/nr_open: {0}")]
    NrOpen(#[source] std::io::Error),
    #[error("setrlimit({key}, {value}): {source}")]
    Set {
        key: &'static str,
        value: u64,
        #[source]
        source: std::io::Error,
    },
}

/// A resource the jailer can limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `fsize`: largest file the process may write (RLIMIT_FSIZE), in bytes.
    Fsize,
    /// `no-file`: one more than the highest file descriptor number (RLIMIT_NOFILE).
    NoFile,
}

impl Resource {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Fsize => "fsize",
            Resource::NoFile => "no-file",
        }
    }

    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Fsize => libc::RLIMIT_FSIZE,
            Resource::NoFile => libc::RLIMIT_NOFILE,
        }
    }
}

/// One limit: a resource and its value (set as both soft and hard limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What is limited.
    pub resource: Resource,
    /// The limit.
    pub value: u64,
}

impl Limit {
    /// Parses `fsize=N` or `no-file=N`.
    pub fn parse(arg: &str) -> Result<Limit, RlimitError> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| RlimitError::Syntax { arg: arg.into() })?;
        let resource = match key {
            "fsize" => Resource::Fsize,
            "no-file" => Resource::NoFile,
            _ => {
                return Err(RlimitError::UnknownKey {
                    arg: arg.into(),
                    key: key.into(),
                });
            }
        };
        let value = value.parse().map_err(|_| RlimitError::BadValue {
            arg: arg.into(),
            value: value.into(),
        })?;
        Ok(Limit { resource, value })
    }
}

/// Parses every `--resource-limit` and adds the default `no-file` if none was given.
pub fn parse_all(args: &[String]) -> Result<Vec<Limit>, RlimitError> {
    let mut limits: Vec<Limit> = Vec::new();
    for arg in args {
        let limit = Limit::parse(arg)?;
        if limits.iter().any(|l| l.resource == limit.resource) {
            return Err(RlimitError::Duplicate {
                key: limit.resource.name(),
            });
        }
        limits.push(limit);
    }
    if !limits.iter().any(|l| l.resource == Resource::NoFile) {
        limits.push(Limit {
            resource: Resource::NoFile,
            value: DEFAULT_NO_FILE,
        });
    }
    Ok(limits)
}

/// Checks what setrlimit could refuse to root: a `no-file` above `fs.nr_open`. Done early, since
/// the limits are applied last (so a small `no-file` cannot starve the jailer itself).
pub fn check(limits: &[Limit]) -> Result<(), RlimitError> {
    let Some(l) = limits.iter().find(|l| l.resource == Resource::NoFile) else {
        return Ok(());
    };
    let text = std::fs::read_to_string("/proc/sys/fs/nr_open").map_err(RlimitError::NrOpen)?;
    let max = text
        .trim()
        .parse()
        .map_err(|_| RlimitError::NrOpen(std::io::ErrorKind::InvalidData.into()))?;
    if l.value > max {
        return Err(RlimitError::AboveNrOpen {
            value: l.value,
            max,
        });
    }
    Ok(())
}

/// Sets each limit on this process (inherited across fork and exec).
pub fn apply(limits: &[Limit]) -> Result<(), RlimitError> {
    for l in limits {
        let rlim = libc::rlimit {
            rlim_cur: l.value,
            rlim_max: l.value,
        };
        // SAFETY: `rlim` is a valid, initialised rlimit the call only reads.
        if unsafe { libc::setrlimit(l.resource.raw(), &rlim) } != 0 {
            return Err(RlimitError::Set {
                key: l.resource.name(),
                value: l.value,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_resources_and_adds_the_default() {
        let l = parse_all(&["fsize=1048576".into()]).unwrap();
        assert_eq!(
            l,
            [
                Limit {
                    resource: Resource::Fsize,
                    value: 1 << 20
                },
                Limit {
                    resource: Resource::NoFile,
                    value: DEFAULT_NO_FILE
                }
            ]
        );
        let l = parse_all(&["no-file=64".into()]).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn refuses_bad_limits() {
        for bad in ["fsize", "nofile=1", "fsize=-1", "fsize=1k", "fsize="] {
            assert!(Limit::parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_all(&["fsize=1".into(), "fsize=2".into()]).is_err());
        let err = Limit::parse("nproc=1").unwrap_err().to_string();
        assert!(
            err.contains("\"nproc\"") && err.contains("no-file"),
            "{err}"
        );
    }
}
