//! The allocator (jemalloc), and when it hands freed memory back to the system.
//!
//! jemalloc keeps the pages a program frees for about ten seconds before it returns them, so
//! that the next allocations find them at hand. That is wrong while a pipeline is loaded and
//! compiled: loading frees almost all it allocated (a 100,000-task pipeline's YAML tree, then
//! its loaded tasks) and the run's own structures seldom fit in the pages it left. So until the
//! run starts, freed pages go back at once: validating a chain of 100,000 tasks peaked at 75 MB
//! instead of 98-103, in the same time. A run keeps them for a second: a run that short never
//! gives any back (giving them back at once made a fan-out of 10,000 instances 15-25% slower,
//! session 10), and the first run of that chain peaked at 102-103 MB instead of 105
//! (session 11, bench/RESULTS-engine.md).

/// jemalloc rather than the C library's allocator: the engine makes millions of small allocations
/// per night of records, and glibc spends a third of a "nothing to do" run in malloc and free.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a run keeps freed pages (jemalloc's default: ten seconds).
const RUN_DECAY_MS: isize = 1_000;

/// While a pipeline is loaded and compiled: freed pages go back to the system at once, until
/// this is dropped.
pub struct Loading(());

impl Loading {
    pub fn start() -> Loading {
        set_decay(0);
        Loading(())
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        running();
    }
}

/// Everywhere else: at start-up, and once a pipeline is compiled.
pub fn running() {
    set_decay(RUN_DECAY_MS);
}

/// Sets how long freed pages are kept, for the arenas there are and those to come. Errors are
/// ignored: this only decides when memory goes back, never whether the program works.
fn set_decay(ms: isize) {
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
    for key in ["dirty_decay_ms", "muzzy_decay_ms"] {
        let all = format!("arenas.{key}\0");
        // SAFETY: both settings are `ssize_t` in jemalloc's documentation (mallctl(3)), which
        // is `isize`; the names are NUL-terminated.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(all.as_bytes(), ms) };
        for i in 0..arenas {
            let one = format!("arena.{i}.{key}\0");
            // SAFETY: as above. Setting it also purges what the new time says is too old.
            let _ = unsafe { tikv_jemalloc_ctl::raw::write(one.as_bytes(), ms) };
        }
    }
}
