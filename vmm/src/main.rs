//! `veil`: the command line over the `veil_vmm` library.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command.execute() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("veil: error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
