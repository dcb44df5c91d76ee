//! Small per-thread indices, unique among the threads alive at any moment:
//! index `i` owns shard `i` of every tracker, so only that thread claims
//! slots there. Indices are given back when a thread exits.

#[cfg(not(tower_graceful_loom))]
pub(crate) use self::std_impl::current;

#[cfg(not(tower_graceful_loom))]
mod std_impl {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Not assigned yet.
    const UNSET: usize = usize::MAX;
    /// The thread is exiting (or could not register): it owns no shard.
    const RETIRED: usize = usize::MAX - 1;

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(UNSET) };
        static OWNER: Owner = const { Owner(Cell::new(UNSET)) };
    }

    /// Gives the index back when the thread exits.
    struct Owner(Cell<usize>);

    impl Drop for Owner {
        fn drop(&mut self) {
            let i = self.0.replace(UNSET);
            if i < RETIRED {
                // From now on this thread serves unnamed: another thread may
                // get the index (and the shard) as soon as it is pushed.
                let _ = INDEX.try_with(|c| c.set(RETIRED));
                free_list().push(i);
            }
        }
    }

    fn free_list() -> std::sync::MutexGuard<'static, Vec<usize>> {
        FREE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This thread's index.
    #[inline]
    pub(crate) fn current() -> usize {
        let i = INDEX.with(Cell::get);
        if i == UNSET {
            assign()
        } else {
            i
        }
    }

    fn assign() -> usize {
        let i = free_list()
            .pop()
            .unwrap_or_else(|| NEXT.fetch_add(1, Relaxed));
        let i = match OWNER.try_with(|o| o.0.set(i)) {
            Ok(()) => i,
            Err(_) => {
                // Thread-local destructors are running: no shard.
                free_list().push(i);
                RETIRED
            }
        };
        INDEX.with(|c| c.set(i));
        i
    }
}

/// Under loom, models name shards explicitly; helpers use shard 0.
#[cfg(tower_graceful_loom)]
pub(crate) fn current() -> usize {
    0
}
