//! Finding cgroup mounts in `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// One cgroup (v1) or cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The root of the hierarchy visible there (`/` unless a sub-tree is bind-mounted).
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 only: the super-block options (controllers such as `cpu`, `name=systemd`, `rw`).
    pub options: Vec<String>,
}

/// Reads the cgroup mounts of this process's mount namespace.
pub fn read() -> Result<Vec<CgroupMount>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })?;
    Ok(parse(&text))
}

/// Parses mountinfo text, keeping cgroup and cgroup2 mounts.
pub fn parse(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (root, mount_point) = (left.get(3)?, left.get(4)?);
            let fstype = *right.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = right
                .get(2)
                .map(|o| o.split(',').map(String::from).collect())
                .unwrap_or_default();
            Some(CgroupMount {
                mount_point: PathBuf::from(unescape(mount_point)),
                root: unescape(root),
                v2,
                options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu\\040acct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_and_v2_mounts() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert!(!m[0].v2 && m[0].options.contains(&"cpu".to_string()));
        assert_eq!(m[1].mount_point, Path::new("/sys/fs/cgroup/cpu acct"));
        assert!(m[1].options.contains(&"cpuacct".to_string()));
        assert!(m[2].v2);
        assert_eq!(m[2].root, "/");
    }
}
