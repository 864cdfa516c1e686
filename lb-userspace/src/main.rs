//! `sluice`: the command-line entry point. Everything it does lives in the library.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice::cli::main(cli)
}
