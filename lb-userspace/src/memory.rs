//! The process's memory settings: transparent huge pages off, and what starting the agent
//! allocated given back to the system once it is freed.
//!
//! The allocator (mimalloc, `main.rs`) keeps freed pages for `purge_delay` (1 s) before it
//! returns them, and only looks again when it is next called. Starting the agent parses the
//! config and the kernel's BTF (some 15 MiB, freed at once), and an agent that then sits
//! idle would keep all of it resident. So while it starts, freed pages go back at once;
//! from then on, with the data path running, the usual delay applies again, and each reload
//! gives back what it freed.

use std::ffi::c_long;
use std::sync::OnceLock;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3 alike), which
/// libmimalloc-sys does not name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay in force before [`starting`] set it to 0 (its default, or
/// `MIMALLOC_PURGE_DELAY`).
static USUAL_PURGE_DELAY: OnceLock<c_long> = OnceLock::new();

/// First thing in `main`: THP off; freed memory returned at once until [`started`].
pub fn starting() {
    no_transparent_huge_pages();
    // SAFETY: mimalloc's option calls have no preconditions; they read and write plain
    // process-wide values.
    let usual = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
    let _ = USUAL_PURGE_DELAY.set(usual);
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}

/// The agent is up: give back what is free, and restore the usual purge delay so the data
/// path does not return (and fault in again) pages it is about to reuse.
pub fn started() {
    release_free();
    // Unset when `starting` never ran (the library in tests): nothing to restore.
    let Some(&usual) = USUAL_PURGE_DELAY.get() else {
        return;
    };
    // SAFETY: as in `starting`.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, usual) };
}

/// Returns the memory the allocator holds free to the system now. Never on the data path.
pub fn release_free() {
    // SAFETY: mi_collect has no preconditions; `force` also purges what the delay keeps.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Turns transparent huge pages off for this process. The allocator's arenas are large and
/// 2 MiB aligned: with THP on (`always`, or `madvise` as mimalloc asks unless built with
/// `no_thp`), every 2 MiB region it touches becomes resident whole, and an agent holding a
/// few KiB per connection keeps hundreds of MiB resident at 10,000 idle ones. Best effort: a
/// kernel without the call keeps its setting.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_purges_at_once_and_started_restores_the_delay() {
        // The index names mimalloc's purge delay: its documented default is 1000 ms (v3),
        // which no neighbouring option has.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: as in `starting`.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        }
        // SAFETY: as in `starting`.
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        starting();
        // SAFETY: as in `starting`.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 0);
        started();
        // SAFETY: as in `starting`.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            before
        );
    }
}
