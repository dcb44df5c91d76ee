//! The in-flight registry: how many requests and background tasks are alive,
//! which ones, and the exact moment the last one ends after draining began.
//!
//! # Design
//!
//! The registry is split into shards, one picked per thread. While serving, a
//! request touches only its shard (an uncontended lock on a cache line that the
//! thread already owns), so two cores serving requests do not bounce a shared
//! counter between them. Each shard keeps a small slab of entries (method,
//! path, start time) so that, if the drain deadline passes, the report can
//! name the stragglers.
//!
//! Drain detection must be exact, and summing shards is racy. So, like Linux's
//! per-CPU reference counts, the tracker switches modes once, when draining
//! begins:
//!
//! 1. `global` starts at 1 (a bias that keeps it from reading 0 early).
//! 2. `begin_drain` visits each shard under its lock, marks it `switched` and
//!    adds the shard's live entries to `global`.
//! 3. From then on, every acquire/release in a switched shard also moves
//!    `global`. A release in a shard that is not switched yet is simply not
//!    counted (its entry was gone before the shard was visited).
//! 4. Once every shard is switched, `begin_drain` removes the bias.
//!
//! Whoever moves `global` to 0 sets the `drained` latch ([`Event`]). Because
//! the bias is only removed after every live entry has been added, `global`
//! cannot reach 0 while anything is in flight, and because the latch keeps its
//! state, a waiter that arrives after the last release still sees it: the
//! "last request ends as draining starts" race has no losing interleaving
//! (checked with loom below).

use std::fmt;
use std::sync::atomic::Ordering;

use crate::event::{Event, Wait};
use crate::sync::{lock, AtomicBool, AtomicUsize, Mutex};

/// What an in-flight entry is, for the straggler list.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Request {
        method: http::Method,
        path: InlinePath,
    },
    Task {
        name: std::borrow::Cow<'static, str>,
    },
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    since: tokio::time::Instant,
}

/// A path kept inline (no allocation): the first [`InlinePath::CAP`] bytes,
/// cut on a character boundary, with a marker when it was truncated.
#[derive(Clone, Copy)]
pub(crate) struct InlinePath {
    buf: [u8; InlinePath::CAP],
    len: u8,
    truncated: bool,
}

impl InlinePath {
    pub(crate) const CAP: usize = 64;

    #[inline]
    pub(crate) fn new(path: &str) -> Self {
        let mut len = path.len().min(Self::CAP);
        while !path.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; Self::CAP];
        buf[..len].copy_from_slice(&path.as_bytes()[..len]);
        Self {
            buf,
            len: len as u8,
            truncated: len < path.len(),
        }
    }

    fn as_str(&self) -> &str {
        // Cut on a char boundary of a `str` in `new`, so always valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Display for InlinePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InlinePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

#[derive(Debug, Default)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    switched: bool,
}

#[derive(Debug)]
enum Slot {
    Live(Entry),
    Free,
}

impl Shard {
    #[inline]
    fn insert(&mut self, entry: Entry) -> u32 {
        self.live += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key as usize] = Slot::Live(entry);
                key
            }
            None => {
                self.slots.push(Slot::Live(entry));
                (self.slots.len() - 1) as u32
            }
        }
    }

    #[inline]
    fn remove(&mut self, key: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(key as usize)?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Live(e) => {
                self.live -= 1;
                self.free.push(key);
                Some(e)
            }
            Slot::Free => None,
        }
    }
}

/// Keeps each shard on its own cache line(s), so shards do not false-share.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Where an acquired entry lives; handed back to [`Tracker::release`].
#[derive(Debug)]
pub(crate) struct Ticket {
    shard: u32,
    key: u32,
}

/// A live entry at the moment of a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) kind: Kind,
    pub(crate) since: tokio::time::Instant,
}

pub(crate) struct Tracker {
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Exact count once draining began, plus a bias of 1 until every shard
    /// has been switched. Unused (stays 1) while serving.
    global: AtomicUsize,
    draining: AtomicBool,
    drained: Event,
    completed_while_draining: AtomicUsize,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("shards", &self.shards.len())
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .field("drained", &self.drained.is_set())
            .finish()
    }
}

impl Tracker {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            shards: (0..shards).map(|_| Padded::default()).collect(),
            global: AtomicUsize::new(1),
            draining: AtomicBool::new(false),
            drained: Event::new(),
            completed_while_draining: AtomicUsize::new(0),
        }
    }

    /// A shard count for this machine: enough that threads rarely share one.
    pub(crate) fn default_shards() -> usize {
        #[cfg(tower_graceful_loom)]
        {
            2
        }
        #[cfg(not(tower_graceful_loom))]
        {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4)
                .saturating_mul(2)
                .clamp(2, 256)
        }
    }

    #[inline]
    fn home_shard(&self) -> usize {
        #[cfg(tower_graceful_loom)]
        {
            0
        }
        #[cfg(not(tower_graceful_loom))]
        {
            thread_slot() % self.shards.len()
        }
    }

    #[inline]
    pub(crate) fn acquire(&self, kind: Kind) -> Ticket {
        self.acquire_in(self.home_shard(), kind)
    }

    #[inline]
    pub(crate) fn acquire_in(&self, shard: usize, kind: Kind) -> Ticket {
        let entry = Entry {
            kind,
            since: tokio::time::Instant::now(),
        };
        let mut s = lock(&self.shards[shard].0);
        let key = s.insert(entry);
        if s.switched {
            // Under the shard lock, so it is ordered against the switch.
            self.global.fetch_add(1, Ordering::AcqRel);
        }
        drop(s);
        Ticket {
            shard: shard as u32,
            key,
        }
    }

    #[inline]
    pub(crate) fn release(&self, ticket: Ticket) {
        let mut s = lock(&self.shards[ticket.shard as usize].0);
        let entry = s.remove(ticket.key);
        let switched = s.switched;
        drop(s);
        if switched && entry.is_some() {
            if matches!(
                entry,
                Some(Entry {
                    kind: Kind::Request { .. },
                    ..
                })
            ) {
                self.completed_while_draining
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.dec_global();
        }
    }

    #[inline]
    fn dec_global(&self) {
        // AcqRel: the release that reaches 0 must observe every earlier
        // decrement (Acquire) before it sets the latch.
        if self.global.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.set();
        }
    }

    /// Switches to exact counting. Idempotent: returns the number of live
    /// entries found by the switch for the call that did it, `None` after.
    #[cold]
    pub(crate) fn begin_drain(&self) -> Option<usize> {
        if self.draining.swap(true, Ordering::AcqRel) {
            return None;
        }
        let mut found = 0;
        for shard in self.shards.iter() {
            let mut s = lock(&shard.0);
            s.switched = true;
            if s.live > 0 {
                found += s.live;
                self.global.fetch_add(s.live, Ordering::AcqRel);
            }
        }
        // Every live entry is in `global` now: drop the bias.
        self.dec_global();
        Some(found)
    }

    /// True once draining began and nothing was in flight at some moment since.
    pub(crate) fn is_drained(&self) -> bool {
        self.drained.is_set()
    }

    /// Completes once draining began and the count reached zero.
    pub(crate) fn drained(&self) -> Wait<'_> {
        self.drained.wait()
    }

    /// Live entries right now (locks each shard in turn; not for the hot path).
    pub(crate) fn in_flight(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).live).sum()
    }

    /// Requests (not tasks) that finished after draining began.
    pub(crate) fn completed_while_draining(&self) -> usize {
        self.completed_while_draining.load(Ordering::Relaxed)
    }

    /// What is alive now, oldest first.
    #[cold]
    pub(crate) fn snapshot(&self) -> Vec<Live> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let s = lock(&shard.0);
            for slot in &s.slots {
                if let Slot::Live(e) = slot {
                    out.push(Live {
                        kind: e.kind.clone(),
                        since: e.since,
                    });
                }
            }
        }
        out.sort_by_key(|l| l.since);
        out
    }
}

#[cfg(not(tower_graceful_loom))]
#[inline]
fn thread_slot() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize as StdAtomic;
    static NEXT: StdAtomic = StdAtomic::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT.fetch_add(1, Ordering::Relaxed);
        s.set(v);
        v
    })
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    use super::*;

    fn req() -> Kind {
        Kind::Request {
            method: http::Method::GET,
            path: InlinePath::new("/x"),
        }
    }

    #[test]
    fn drained_only_after_last_release() {
        let t = Tracker::new(4);
        let a = t.acquire_in(0, req());
        let b = t.acquire_in(3, req());
        assert_eq!(t.begin_drain(), Some(2));
        assert_eq!(t.begin_drain(), None, "second begin_drain is a no-op");
        assert!(!t.is_drained());
        t.release(a);
        assert!(!t.is_drained());
        t.release(b);
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 2);
    }

    #[test]
    fn empty_tracker_drains_at_once() {
        let t = Tracker::new(3);
        let a = t.acquire_in(1, req());
        t.release(a);
        t.begin_drain();
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 0);
    }

    #[test]
    fn acquire_after_switch_is_counted() {
        let t = Tracker::new(2);
        t.begin_drain();
        assert!(t.is_drained());
        let a = t.acquire_in(0, req());
        assert_eq!(t.in_flight(), 1);
        t.release(a);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn inline_path_truncates_on_char_boundary() {
        let long = "é".repeat(100);
        let p = InlinePath::new(&long);
        let s = p.to_string();
        assert!(s.ends_with('…'));
        assert!(s.len() <= InlinePath::CAP + '…'.len_utf8());
        assert_eq!(InlinePath::new("/a/b").to_string(), "/a/b");
    }

    #[test]
    fn snapshot_names_live_entries_oldest_first() {
        let t = Tracker::new(2);
        let a = t.acquire_in(0, req());
        let b = t.acquire_in(1, Kind::Task { name: "job".into() });
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        t.release(a);
        t.release(b);
        assert!(t.snapshot().is_empty());
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod loom_tests {
    use super::*;
    use loom::future::block_on;
    use loom::sync::Arc;
    use loom::thread;

    fn req() -> Kind {
        Kind::Request {
            method: http::Method::GET,
            path: InlinePath::new("/"),
        }
    }

    /// The last request ends exactly as draining starts: the waiter must wake,
    /// and must not wake before the release.
    #[test]
    fn last_release_races_begin_drain() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let ticket = t.acquire_in(1, req());
            let t2 = t.clone();
            let releaser = thread::spawn(move || t2.release(ticket));
            t.begin_drain();
            block_on(t.drained());
            releaser.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// Requests on two shards, released on other threads while the switch
    /// walks the shards: never drained early, always drained at the end.
    #[test]
    fn cross_shard_releases_during_switch() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let a = t.acquire_in(0, req());
            let b = t.acquire_in(1, req());
            let ta = t.clone();
            let tb = t.clone();
            let h1 = thread::spawn(move || ta.release(a));
            let h2 = thread::spawn(move || {
                tb.release(b);
            });
            t.begin_drain();
            block_on(t.drained());
            h1.join().unwrap();
            h2.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// A new request acquired while draining keeps the latch unset until it
    /// ends.
    #[test]
    fn acquire_during_switch_never_drains_early() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let held = t.acquire_in(0, req());
            let t2 = t.clone();
            let h = thread::spawn(move || {
                let late = t2.acquire_in(1, req());
                let early = t2.is_drained();
                t2.release(late);
                early
            });
            t.begin_drain();
            assert!(!t.is_drained(), "`held` is still live");
            let drained_while_late_live = h.join().unwrap();
            assert!(!drained_while_late_live, "`held` was live all along");
            t.release(held);
            assert!(t.is_drained());
        });
    }

    /// Concurrent begin_drain calls: exactly one performs the switch, the bias
    /// is removed once, and the latch is set exactly when nothing is live.
    #[test]
    fn concurrent_begin_drain() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let a = t.acquire_in(1, req());
            let t2 = t.clone();
            let h = thread::spawn(move || t2.begin_drain());
            let mine = t.begin_drain();
            let theirs = h.join().unwrap();
            assert!(mine.is_some() ^ theirs.is_some());
            assert_eq!(mine.or(theirs), Some(1));
            assert!(!t.is_drained());
            t.release(a);
            assert!(t.is_drained());
        });
    }
}
