//! `veil`: the command line over the `veil_vmm` library.

mod cli;

use clap::Parser;

fn main() {
    // The boot timer's origin: taken before anything else the process does.
    let start = std::time::Instant::now();
    let cli = cli::Cli::parse();
    let code = match cli.command.execute(start) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("veil: error: {err:#}");
            1
        }
    };
    // Serial output to stdout is line-buffered; what the guest wrote last must not be lost.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}
