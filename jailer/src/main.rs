//! `veil-jailer`: builds a jail (chroot, namespaces, cgroups, uid/gid, rlimits, device nodes) and
//! execs `veil` inside it. The flags are those of Firecracker's jailer; see docs/jailer.md.

mod args;
mod cgroup;
mod cleanup;
mod devices;
mod exec;
mod fds;
mod fs;
mod id;
mod jail;
mod namespaces;
mod rlimit;

use clap::Parser;

fn main() {
    // First, before anything of the jailer's own is open: nothing inherited leaks into the jail.
    if let Err(e) = fds::close_inherited() {
        eprintln!("veil-jailer: error: {:#}", anyhow::Error::from(e));
        std::process::exit(1);
    }
    let args = args::Args::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("veil-jailer: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: args::Args) -> anyhow::Result<()> {
    let cfg = args::Config::from_args(args)?;
    match jail::run(&cfg) {
        Ok(_child) => Ok(()),
        Err(failure) => {
            let mut msg = failure.error.to_string();
            for problem in &failure.cleanup {
                msg.push_str(&format!("\n  cleanup: {problem}"));
            }
            if !failure.left_behind.is_empty() {
                msg.push_str(
                    "\n  left behind (out of reach from inside the jail; remove as root):",
                );
                for path in &failure.left_behind {
                    msg.push_str(&format!("\n    {}", path.display()));
                }
            }
            Err(anyhow::Error::msg(msg))
        }
    }
}
