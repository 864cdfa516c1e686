//! Whether this process can run the privileged tests, and what to do when it cannot.

use std::io::Write;
use std::sync::OnceLock;

/// Env vars that, when set (not empty, `0` or `false`), make a missing privilege fatal.
pub(crate) const REQUIRE_VARS: [&str; 2] = ["CI", "SLUICE_REQUIRE_PRIVILEGED"];

/// True when root/BPF tests can run here: effective uid 0, the bpf() syscall works, and `ip`,
/// `nsenter` and `ethtool` are installed. Start every privileged test with
/// `if !sluice_tests::privileged() { return; }`.
///
/// When they cannot run, this panics with the reason if `CI` or `SLUICE_REQUIRE_PRIVILEGED`
/// is set (CI must fail, never skip); otherwise it prints `skipping <test>: <reason>` to
/// stderr and returns false.
#[track_caller]
pub fn privileged() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let Err(reason) = PROBE.get_or_init(probe) else {
        return true;
    };
    if let Some(var) = REQUIRE_VARS.iter().find(|var| is_set(var)) {
        panic!("privileged test cannot run ({var} is set, so it may not be skipped): {reason}");
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    // Straight to the stderr handle: libtest captures `eprintln!`, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
    false
}

/// Why privileged tests cannot run here, or `Ok`.
fn probe() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root (effective uid is not 0)".to_owned());
    }
    for tool in ["ip", "nsenter", "ethtool"] {
        if !on_path(tool) {
            return Err(format!("`{tool}` is not on PATH"));
        }
    }
    bpf_works()
}

/// Creates and closes a one-slot BPF array map: the cheapest proof that bpf() is allowed.
fn bpf_works() -> Result<(), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for BPF_MAP_CREATE starts with map_type, key_size, value_size,
    // max_entries; the kernel requires every byte it does not read to be zero.
    let mut attr = [0u32; 16];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: `attr` is a valid, initialised buffer of the size passed, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(format!(
            "the bpf() syscall fails: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

pub(crate) fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

pub(crate) fn is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}
