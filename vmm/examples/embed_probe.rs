//! Embedding Veil: launch the probe guest from a program of your own and report how it ended.
//!
//! `cargo run -p veil-vmm --example embed_probe -- [CPUS]`

use veil_vmm::{GuestExit, Kernel, SerialOutput, VmConfig, launch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpus = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2,
    };
    let config = VmConfig::builder(Kernel::probe())
        .cpus(cpus)
        .memory(256 << 20)
        .serial(SerialOutput::Stdout)
        .build()?;
    let vm = launch(&config)?;
    let exit = vm.wait();
    match &exit {
        GuestExit::Crashed(report) => {
            eprintln!("guest crashed on vCPU {}: {}", report.vcpu, report.reason)
        }
        other => eprintln!("guest ended: {other:?}"),
    }
    if let Some(t) = vm.boot_time() {
        eprintln!(
            "first guest instruction after {:.3} ms",
            t.as_secs_f64() * 1e3
        );
    }
    std::process::exit(exit.status());
}
