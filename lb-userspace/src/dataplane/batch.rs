//! `BPF_MAP_UPDATE_BATCH` (Linux >= 5.6 for arrays), which aya 0.14 does not offer: a reload
//! of 10,000 backends writes about 75,000 array entries, and one `bpf` call each was most of
//! its time.

use std::os::fd::{AsRawFd, BorrowedFd};

use tracing::debug;

/// `BPF_MAP_UPDATE_BATCH` in `enum bpf_cmd`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries per call, so one call's copy of keys and values stays small.
const CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `values[i]` at `keys[i]` of the array map `fd` (`V` of the map's value size), in as
/// few calls as it can. Returns how many leading entries were written: fewer than all when
/// the kernel refused a batch, for the caller to write the rest one by one (older kernels
/// lack the command; the one-by-one write then says what is wrong).
pub(super) fn update<V: Copy>(fd: BorrowedFd<'_>, keys: &[u32], values: &[V]) -> usize {
    let len = keys.len().min(values.len());
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; `keys` and `values`
        // point at `n` live, initialised entries each, which the kernel only reads.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc != 0 {
            // The chunk is left to the caller whole: `count` is not updated on every failure
            // (an unknown command leaves it as it was), and writing an entry twice is harmless.
            debug!(error = %std::io::Error::last_os_error(), "batched map update refused");
            break;
        }
        done += n;
    }
    done
}
