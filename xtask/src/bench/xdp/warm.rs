//! The warm method: one BPF_PROG_TEST_RUN call with repeat = N, the kernel's average per run.
//!
//! The kernel runs the N repeats on one buffer without restoring it. Sluice's DSR path
//! rewrites only MACs and a passed frame is untouched, so their output takes the same path
//! again and Sluice runs bare, net of its empty program run the same way. Katran encapsulates,
//! so it runs inside a restoring wrapper (`restore.bpf.c`) built from its source tree, net of
//! the same wrapper around an empty body. (Wrapping Sluice's object the same way would take a
//! BPF extension, which this machine's kernel refuses to load: EPERM.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use super::dataplane::{Run, run};
use super::katran::Katran;
use crate::bench::tools::{self, Tool};
use crate::shell::{self, step};
use crate::workspace;

/// The wrapper's entry point, in both builds.
pub const WRAPPER: &str = "restore_wrapper";
/// The wrapper's source, written out for clang at run time.
pub const SOURCE: &str = include_str!("restore.bpf.c");
pub const CLANG: Tool = Tool {
    needs: "clang-14",
    package: "clang-14",
};

/// The wrapper around its empty body, and around Katran.
pub struct Warm {
    ifindex: u32,
    empty: Ebpf,
    pub katran: Katran,
}

impl Warm {
    /// Builds and loads the empty wrapper, and loads `wrapped` (Katran inside the wrapper).
    /// Call it on the pinned thread inside the bench namespace.
    pub fn load(wrapped: &Path, ifindex: u32, cpu: usize) -> Result<Warm> {
        let object = build_empty()?;
        let mut empty = EbpfLoader::new()
            .load_file(&object)
            .with_context(|| format!("loading {}", object.display()))?;
        let xdp: &mut Xdp = empty
            .program_mut(WRAPPER)
            .with_context(|| format!("no program {WRAPPER} in {}", object.display()))?
            .try_into()?;
        xdp.load()
            .context("the verifier rejected the restoring wrapper")?;
        Ok(Warm {
            ifindex,
            empty,
            katran: Katran::load(wrapped, cpu, WRAPPER)?,
        })
    }

    /// Runs `frame` `repeat` times through the wrapper around the empty body, or Katran.
    pub fn run(&self, katran: bool, frame: &[u8], out: &mut [u8], repeat: u32) -> Result<Run> {
        let ebpf = if katran {
            &self.katran.ebpf
        } else {
            &self.empty
        };
        let program: &Xdp = ebpf
            .program(WRAPPER)
            .context("the restoring wrapper")?
            .try_into()?;
        run(program, self.ifindex, frame, out, repeat)
    }
}

/// Writes the wrapper's source under the bench's target folder and returns its path.
pub fn write_source() -> Result<PathBuf> {
    let dir = workspace::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = dir.join("restore.bpf.c");
    std::fs::write(&source, SOURCE).with_context(|| format!("writing {}", source.display()))?;
    Ok(source)
}

/// Builds the wrapper around its empty body with clang (installed when missing, saying so).
fn build_empty() -> Result<PathBuf> {
    tools::ensure(&[CLANG])?;
    let source = write_source()?;
    let object = source.with_extension("o");
    step("Building", "the warm loop's restoring wrapper (clang-14)");
    shell::run(
        Command::new("clang-14")
            .args(["-target", "bpf", "-O2", "-g", "-c"])
            .arg(&source)
            .arg("-o")
            .arg(&object),
        "clang-14 could not build the restoring wrapper; its output is above",
    )?;
    Ok(object)
}
