//! `sluice`: the command-line entry point. Everything it does lives in the library.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::Cli;

// The L7 proxy allocates and frees small buffers and header maps on every request;
// mimalloc's thread-local free lists cost less there than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::memory::starting();
    let cli = Cli::parse();
    sluice::cli::main(cli)
}
