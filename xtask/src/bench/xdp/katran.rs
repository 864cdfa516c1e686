//! Katran's XDP balancer as the bench's contender: its object (built from a source tree the
//! user names, never from anything in this repository), loaded with aya and provisioned for the
//! same DSR services, backends and Maglev rings as Sluice's, and the check that each call took
//! the path its case names.
//! Its maps' layouts and provisioning are in `katran_maps`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use sluice_tests::xdp_lab::{BACKENDS, Family, backend_ip};

use super::katran_maps::{Stats, provision};
use super::services::take;
use crate::bench::tools::{self, Tool};
use crate::shell::step;
use crate::workspace;

/// Where the bench looks for Katran when `--katran` is not given.
pub const ENV: &str = "SLUICE_BENCH_KATRAN";
/// Katran's entry point.
pub const PROGRAM: &str = "balancer_ingress";
/// The destination MAC Katran writes on every forwarded frame (its `ctl_array[0]`).
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x0b, 0, 0, 0, 0x01];

const LLC: Tool = Tool {
    needs: "llc-14",
    package: "llvm-14",
};
/// The source file whose presence says a folder is a Katran tree.
const SOURCE: &str = "katran/lib/bpf/balancer.bpf.c";

// Katran's build defaults (balancer_consts.h).
const MAX_VIPS: u32 = 512;
const LRU_CNTRS: u32 = 0;
const LRU_MISS_CNTR: u32 = 1;
const NEW_CONN_RATE_CNTR: u32 = 2;
const FALLBACK_LRU_CNTR: u32 = 3;
const XDP_TOTAL_CNTR: u32 = 16;
const XDP_TX_CNTR: u32 = 17;
const XDP_PASS_CNTR: u32 = 19;

/// Katran's objects for this run.
pub struct Objects {
    /// `balancer.bpf.o`, for the fresh-frame method.
    pub plain: PathBuf,
    /// Katran inside the warm loop's restoring wrapper, when built from sources; otherwise why
    /// there is none.
    pub wrapped: Result<PathBuf, String>,
}

/// Katran's objects: from `path` (`--katran`) or the environment variable, built when it is a
/// source tree. `Ok(Err(reason))`, the reason also printed on one line, when no path was given.
pub fn objects(path: Option<&Path>) -> Result<Result<Objects, String>> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => match std::env::var_os(ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                let reason = format!(
                    "no Katran given (--katran PATH or {ENV}=PATH: a source tree or a built \
                     balancer.bpf.o)"
                );
                step("Skipping", &format!("Katran's column: {reason}"));
                return Ok(Err(reason));
            }
        },
    };
    if path.is_file() {
        return Ok(Ok(Objects {
            plain: path,
            wrapped: Err(
                "Katran was given as a built object; the warm loop's wrapper is \
                built from its source tree"
                    .into(),
            ),
        }));
    }
    if !path.join(SOURCE).is_file() {
        bail!(
            "Katran at {}: neither a built object nor a source tree (no {SOURCE} in it)",
            path.display()
        );
    }
    tools::ensure(&[super::warm::CLANG, LLC])?;
    let dir = workspace::target_dir().join("bench").join("katran");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    step(
        "Building",
        &format!(
            "Katran's balancer.bpf.o from {}, and Katran inside the warm loop's wrapper \
             (clang-14, llc-14)",
            path.display()
        ),
    );
    let plain = dir.join("balancer.bpf.o");
    build(&path, Path::new(SOURCE), &[], &plain)?;
    let wrapped = dir.join("restore-katran.bpf.o");
    let wrapper = super::warm::write_source()?;
    // Katran's entry point becomes a plain function the wrapper calls.
    let defines = ["-DWRAP_KATRAN", "-DPROG_SEC_NAME=\".text\""];
    build(&path, &wrapper, &defines, &wrapped)?;
    Ok(Ok(Objects {
        plain,
        wrapped: Ok(wrapped),
    }))
}

/// Builds `source` in the tree at `root` as Katran's own Makefile does (clang to LLVM IR, llc
/// to BPF) into `out`.
fn build(root: &Path, source: &Path, defines: &[&str], out: &Path) -> Result<()> {
    let mut clang = Command::new("clang-14")
        .current_dir(root)
        .args(["-I.", "-Ikatran/lib/linux_includes", "-D__KERNEL__"])
        .args(defines)
        .args(["-Wno-unused-value", "-Wno-pointer-sign"])
        .args([
            "-Wno-compare-distinct-pointer-types",
            "-O2",
            "-g",
            "-emit-llvm",
        ])
        .arg("-c")
        .arg(source)
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting clang-14")?;
    let ir = clang.stdout.take().context("clang-14's output")?;
    let llc = Command::new("llc-14")
        .args(["-march=bpf", "-filetype=obj", "-o"])
        .arg(out)
        .stdin(ir)
        .status()
        .context("running llc-14")?;
    let clang = clang.wait().context("waiting for clang-14")?;
    if !clang.success() || !llc.success() {
        bail!(
            "building {} failed (clang-14: {clang}, llc-14: {llc}); its output is above",
            out.display()
        );
    }
    Ok(())
}

/// Which path a Katran call must have taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not a VIP: passed up.
    NoService,
    /// A TCP SYN: hashed onto the ring (an LRU miss), the flow inserted.
    NewFlow,
    /// A packet of a flow in the LRU.
    Established,
}

/// Katran's counters this bench reads, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    total: u64,
    tx: u64,
    pass: u64,
    vip: u64,
    syn_miss: u64,
    other_miss: u64,
    fallback: u64,
    pub flows: usize,
}

/// A loaded and provisioned Katran.
pub struct Katran {
    pub ebpf: Ebpf,
    stats: PerCpuArray<MapData, Stats>,
    lru: HashMap<MapData, [u8; 40], [u8; 16]>,
    /// The LRU's keys after provisioning, kept by [`Katran::forget_new_flows`].
    baseline: Vec<[u8; 40]>,
}

impl Katran {
    /// Loads `object` with aya, its XDP program `program` (Katran's own entry point, or the
    /// wrapper around it), and provisions its maps with `cpu`'s own LRU (the thread is pinned
    /// there).
    pub fn load(object: &Path, cpu: usize, program: &str) -> Result<Katran> {
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("loading Katran's {}", object.display()))?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .with_context(|| format!("no program {program} in {}", object.display()))?
            .try_into()?;
        xdp.load()
            .with_context(|| format!("the verifier rejected {program} of {}", object.display()))?;
        let lru = provision(&mut ebpf, cpu)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "stats")?)?;
        let mut katran = Katran {
            ebpf,
            stats,
            lru,
            baseline: Vec::new(),
        };
        katran.baseline = katran.lru.keys().collect::<Result<_, _>>()?;
        Ok(katran)
    }

    /// The counters and the LRU's size now.
    pub fn counts(&self) -> Result<Counts> {
        let read = |slot: u32| -> Result<Stats> {
            let per_cpu = self
                .stats
                .get(&(MAX_VIPS + slot), 0)
                .with_context(|| format!("reading Katran's stats[{}]", MAX_VIPS + slot))?;
            Ok(per_cpu.iter().fold(Stats::default(), |a, s| Stats {
                v1: a.v1 + s.v1,
                v2: a.v2 + s.v2,
            }))
        };
        let miss = read(LRU_MISS_CNTR)?;
        Ok(Counts {
            total: read(XDP_TOTAL_CNTR)?.v1,
            tx: read(XDP_TX_CNTR)?.v1,
            pass: read(XDP_PASS_CNTR)?.v1,
            vip: read(LRU_CNTRS)?.v1,
            syn_miss: miss.v1,
            other_miss: miss.v2,
            fallback: read(FALLBACK_LRU_CNTR)?.v1,
            flows: self.lru.keys().count(),
        })
    }

    /// Zeroes the flood limiter's count of new connections, which otherwise stops LRU inserts
    /// after 125,000 SYNs in one second on a CPU.
    pub fn reset_flood_limit(&mut self) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![Stats::default(); cpus])?;
        self.stats
            .set(MAX_VIPS + NEW_CONN_RATE_CNTR, zero, 0)
            .context("zeroing Katran's new-connection rate counter")
    }

    /// Deletes every flow inserted since provisioning and establishing, so new-flow batches
    /// insert into a table of the same size every round.
    pub fn forget_new_flows(&mut self) -> Result<()> {
        let now: Vec<[u8; 40]> = self.lru.keys().collect::<Result<_, _>>()?;
        for key in now.iter().filter(|k| !self.baseline.contains(k)) {
            self.lru.remove(key).context("deleting from Katran's LRU")?;
        }
        Ok(())
    }

    /// Remembers the LRU's current flows (the established cases') as the ones to keep.
    pub fn keep_current_flows(&mut self) -> Result<()> {
        self.baseline = self.lru.keys().collect::<Result<_, _>>()?;
        Ok(())
    }
}

/// Checks that `calls` calls moved Katran's counters as `path` must, and nothing else.
pub fn check_counts(path: Route, calls: u64, before: &Counts, after: &Counts) -> Result<()> {
    let moved = |a: u64, b: u64| b.wrapping_sub(a);
    let (tx, pass, vip, syn_miss) = match path {
        Route::NoService => (0, calls, 0, 0),
        Route::NewFlow => (calls, 0, calls, calls),
        Route::Established => (calls, 0, calls, 0),
    };
    let seen = [
        ("packets", moved(before.total, after.total), calls),
        ("XDP_TX", moved(before.tx, after.tx), tx),
        ("XDP_PASS", moved(before.pass, after.pass), pass),
        ("VIP packets", moved(before.vip, after.vip), vip),
        (
            "SYN LRU misses",
            moved(before.syn_miss, after.syn_miss),
            syn_miss,
        ),
        (
            "other LRU misses",
            moved(before.other_miss, after.other_miss),
            0,
        ),
        (
            "fallback LRU uses",
            moved(before.fallback, after.fallback),
            0,
        ),
    ];
    let wrong: Vec<String> = seen
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name} +{got} (want +{want})"))
        .collect();
    if !wrong.is_empty() {
        bail!("Katran's counters over {calls} calls: {}", wrong.join(", "));
    }
    if path == Route::Established && after.flows != before.flows {
        bail!(
            "Katran's LRU went from {} to {} flows on established packets",
            before.flows,
            after.flows
        );
    }
    Ok(())
}

/// Checks Katran's output frame: the input behind an outer IPv4 (IPIP) or IPv6 (IPv6-in-IPv6)
/// header to one of the backends, sent to the next hop's MAC.
pub fn check_output(path: Route, input: &[u8], output: &[u8]) -> Result<(), String> {
    if path == Route::NoService {
        return (output == input)
            .then_some(())
            .ok_or_else(|| "a passed frame was modified".into());
    }
    let ipv6 = input.get(14).is_some_and(|b| b >> 4 == 6);
    let outer = if ipv6 { 40 } else { 20 };
    if output.len() != input.len() + outer {
        return Err(format!(
            "the output is {} bytes, not the input's {} plus a {outer}-byte outer header",
            output.len(),
            input.len()
        ));
    }
    if output[..6] != NEXT_HOP_MAC {
        return Err(format!(
            "sent to MAC {:02x?}, not the next hop",
            &output[..6]
        ));
    }
    if output[14 + outer..] != input[14..] {
        return Err("the inner packet differs from the input".into());
    }
    let dst: IpAddr = if ipv6 {
        <[u8; 16]>::try_from(&output[38..54])
            .unwrap_or_default()
            .into()
    } else {
        <[u8; 4]>::try_from(&output[30..34])
            .unwrap_or_default()
            .into()
    };
    if !(0..BACKENDS).any(|i| backend_ip(i, Family::from_ipv6(ipv6)) == dst) {
        return Err(format!("encapsulated to {dst}, which is no backend"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;
    use crate::bench::xdp::frames::{self, Segment};
    use crate::bench::xdp::services::{Mode, SERVICE_PORT, vip};

    /// The input behind an outer IPv4 header to `dst`, sent to `mac`: Katran's output shape.
    fn encapsulated(input: &[u8], mac: [u8; 6], dst: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::from(&mac[..]);
        out.extend_from_slice(&input[6..14]);
        let mut outer = [0u8; 20];
        outer[0] = 0x45;
        outer[9] = 4;
        outer[16..20].copy_from_slice(&dst);
        out.extend_from_slice(&outer);
        out.extend_from_slice(&input[14..]);
        out
    }

    fn input() -> Vec<u8> {
        let client: SocketAddr = "10.1.0.10:40000".parse().unwrap_or_else(|e| panic!("{e}"));
        let vip = SocketAddr::new(vip(Family::V4, Mode::Dsr), SERVICE_PORT);
        frames::frame(Segment::TcpData, client, vip).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn encapsulation_to_a_backend_via_the_next_hop_passes() {
        let input = input();
        let IpAddr::V4(backend) = backend_ip(3, Family::V4) else {
            panic!("backend_ip(_, V4) is IPv4")
        };
        let out = encapsulated(&input, NEXT_HOP_MAC, backend.octets());
        assert_eq!(check_output(Route::Established, &input, &out), Ok(()));
    }

    #[test]
    fn wrong_next_hop_backend_or_inner_packet_fails() {
        let input = input();
        let good = backend_ip(0, Family::V4);
        let IpAddr::V4(good) = good else {
            panic!("IPv4")
        };
        let wrong_mac = encapsulated(&input, [2, 0, 0, 0, 0, 9], good.octets());
        assert!(check_output(Route::NewFlow, &input, &wrong_mac).is_err());
        let no_backend = encapsulated(&input, NEXT_HOP_MAC, [10, 9, 9, 9]);
        assert!(check_output(Route::NewFlow, &input, &no_backend).is_err());
        let mut changed = encapsulated(&input, NEXT_HOP_MAC, good.octets());
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(check_output(Route::Established, &input, &changed).is_err());
        assert!(check_output(Route::NoService, &input, &input).is_ok());
        assert!(check_output(Route::NoService, &input, &changed).is_err());
    }

    #[test]
    fn counters_must_move_by_exactly_the_path() {
        let before = Counts::default();
        let established = Counts {
            total: 10,
            tx: 10,
            vip: 10,
            ..before
        };
        assert!(check_counts(Route::Established, 10, &before, &established).is_ok());
        // The same counts from SYNs lack their LRU misses.
        assert!(check_counts(Route::NewFlow, 10, &before, &established).is_err());
        let grew = Counts {
            flows: 1,
            ..established
        };
        assert!(check_counts(Route::Established, 10, &before, &grew).is_err());
        let fallback = Counts {
            fallback: 10,
            ..established
        };
        assert!(check_counts(Route::Established, 10, &before, &fallback).is_err());
    }
}
