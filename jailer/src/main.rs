//! `veil-jailer`: builds a jail (chroot, namespaces, cgroups, uid/gid, rlimits) and execs `veil`.

fn main() {
    eprintln!("veil-jailer: not built yet (issue 7)");
    std::process::exit(2);
}
