//! The in-flight tracker: how many requests and background tasks are alive,
//! which ones, and the exact moment the last one ends after draining began.
//!
//! # Counting: per-thread while serving, exact while draining
//!
//! Every request of every core goes through here, so the serving path must
//! touch no cache line that another core writes. Each thread adds and
//! subtracts on its own shard's counter (one `fetch_add` on a line it
//! owns). A shard's value means nothing alone (a request may start on one
//! thread and end on another); only the sum does, and summing live counters
//! is racy. So, like Linux's per-CPU reference counts, the tracker switches
//! once, when draining begins, to one exact counter:
//!
//! 1. `global` starts at a huge `BIAS`, so that nothing that happens during
//!    the switch can bring it to zero.
//! 2. `begin_drain` **seals** each shard by swapping its value for the
//!    `SEALED` sentinel and adds up what it took.
//! 3. Every counter operation is a `fetch_add` on the thread's shard whose
//!    *previous value* says whether the shard was sealed. Because the swap
//!    and the `fetch_add` are read-modify-writes of the same atomic, each
//!    operation is either before the seal (and inside the sum) or after it
//!    (it then sees the sentinel and also applies itself to `global`). No
//!    operation is lost or counted twice.
//! 4. With every shard sealed, `begin_drain` adds the sum minus `BIAS`.
//!
//! From then on `global` is exact, and whoever brings it to zero sets the
//! `drained` latch ([`Event`]), which also serves waiters that arrive later:
//! the "last request ends as draining starts" race has no losing
//! interleaving (loom models below).
//!
//! # Naming: per-slot, lock-free, no clock read while serving
//!
//! To name stragglers at the deadline, each request claims a slot in its
//! shard (one compare-exchange on a line the thread owns) and writes its
//! method and path prefix there with plain stores; ending releases the slot
//! with one store. No timestamp is taken while serving (a clock read costs
//! as much as all the rest): when shutdown is triggered, every live slot is
//! stamped with the trigger time, and requests that start afterwards record
//! their own. A straggler's age is therefore exact if it started after the
//! trigger, and otherwise a lower bound ("in flight since before the
//! trigger"), which is what tells a user what blocked the shutdown. A thread
//! with more live requests than slots counts the extra ones as unnamed.
//! Background tasks (rare, named by the user) sit in a small locked list.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::event::{Event, Wait};
use crate::sync::{fence, lock, AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Mutex};

/// Far below any real count: a sealed shard's value stays near it.
const SEALED: isize = isize::MIN / 2;
/// Far above any real count: keeps `global` away from zero during the switch.
const BIAS: isize = isize::MAX / 4;

#[cfg(not(tower_graceful_loom))]
const SLOTS: usize = 128;
#[cfg(tower_graceful_loom)]
const SLOTS: usize = 2;
#[cfg(not(tower_graceful_loom))]
const PATH_WORDS: usize = 6;
#[cfg(tower_graceful_loom)]
const PATH_WORDS: usize = 1;
/// The longest path prefix a slot keeps.
pub(crate) const PATH_CAP: usize = PATH_WORDS * 8;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const LIVE: u64 = 2;
const TAG: u64 = 3;
/// `since` bit: the time is the trigger's, a lower bound of the real start.
const BEFORE_TRIGGER: u64 = 1 << 63;

struct Slot {
    /// `generation << 2 | tag`.
    state: AtomicU64,
    method: AtomicU64,
    /// Path length in the low 16 bits, bit 16 set when truncated.
    meta: AtomicU64,
    path: [AtomicU64; PATH_WORDS],
    /// Nanoseconds since the tracker's epoch + 1; 0 = not stamped yet.
    since: AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Self {
            state: AtomicU64::new(FREE),
            method: AtomicU64::new(0),
            meta: AtomicU64::new(0),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
            since: AtomicU64::new(0),
        }
    }
}

struct Shard {
    count: AtomicIsize,
    /// Requests on this shard that found no free slot.
    unnamed: AtomicUsize,
    slots: Box<[Slot]>,
}

/// Keeps each shard's counter on its own cache line(s).
#[repr(align(128))]
struct Padded<T>(T);

/// What an in-flight entry is, for the straggler list.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Request { method: String, path: String },
    Task { name: Cow<'static, str> },
    Unnamed { count: usize },
}

/// A live entry at the moment of a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) kind: Kind,
    /// When it started, if known; `lower_bound` when it is the trigger time.
    pub(crate) since: Option<tokio::time::Instant>,
    pub(crate) lower_bound: bool,
}

/// What a guard hands back to [`Tracker::release`].
#[derive(Debug)]
pub(crate) struct Ticket {
    name: Name,
    request: bool,
}

#[derive(Debug)]
enum Name {
    Slot { shard: u32, slot: u32, state: u64 },
    Unnamed { shard: u32 },
    Task { key: usize },
}

#[derive(Default)]
struct Tasks {
    slots: Vec<Option<(Cow<'static, str>, tokio::time::Instant)>>,
    free: Vec<usize>,
}

pub(crate) struct Tracker {
    shards: Box<[Padded<Shard>]>,
    global: AtomicIsize,
    draining: AtomicBool,
    /// Set at trigger: new requests record their start time.
    stamping: AtomicBool,
    drained: Event,
    completed_while_draining: AtomicUsize,
    tasks: Mutex<Tasks>,
    epoch: tokio::time::Instant,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("shards", &self.shards.len())
            .field("draining", &self.draining.load(Relaxed))
            .field("drained", &self.drained.is_set())
            .finish()
    }
}

impl Tracker {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Padded(Shard {
                        count: AtomicIsize::new(0),
                        unnamed: AtomicUsize::new(0),
                        slots: (0..SLOTS).map(|_| Slot::new()).collect(),
                    })
                })
                .collect(),
            global: AtomicIsize::new(BIAS),
            draining: AtomicBool::new(false),
            stamping: AtomicBool::new(false),
            drained: Event::new(),
            completed_while_draining: AtomicUsize::new(0),
            tasks: Mutex::new(Tasks::default()),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// A shard count for this machine: one per core, so threads rarely share.
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
                .clamp(1, 64)
        }
    }

    #[inline]
    fn home(&self) -> usize {
        #[cfg(tower_graceful_loom)]
        {
            0
        }
        #[cfg(not(tower_graceful_loom))]
        {
            thread_state(|t| t.shard) % self.shards.len()
        }
    }

    /// Adds one through `shard` (and through `global` if the shard is
    /// sealed, that is, while draining).
    #[inline]
    fn inc(&self, shard: usize) {
        // AcqRel here and in `release_in`: the release that ends a request
        // publishes its work to the sealing swap (or, when sealed, to the
        // `global` update) and so to whoever the drained latch wakes.
        let prev = self.shards[shard].0.count.fetch_add(1, AcqRel);
        if prev <= SEALED / 2 {
            self.add_global(1);
        }
    }

    #[cold]
    fn add_global(&self, delta: isize) {
        if self.global.fetch_add(delta, AcqRel) + delta == 0 {
            self.drained.set();
        }
    }

    // ---- requests ----

    #[inline]
    pub(crate) fn acquire_request(&self, method: &http::Method, path: &str) -> Ticket {
        self.acquire_request_in(self.home(), method, path)
    }

    #[inline]
    pub(crate) fn acquire_request_in(
        &self,
        shard: usize,
        method: &http::Method,
        path: &str,
    ) -> Ticket {
        self.inc(shard);
        Ticket {
            name: self.claim(shard, method, path),
            request: true,
        }
    }

    #[inline]
    fn claim(&self, shard: usize, method: &http::Method, path: &str) -> Name {
        let s = &self.shards[shard].0;
        let start = cursor_next();
        for i in 0..4 {
            let idx = (start + i) % SLOTS;
            let slot = &s.slots[idx];
            let st = slot.state.load(Relaxed);
            if st & TAG != FREE {
                continue;
            }
            let writing = ((st & !TAG) + 4) | WRITING;
            if slot
                .state
                .compare_exchange(st, writing, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            // Seqlock-style publication for `snapshot`: fields are written
            // between WRITING and LIVE; a reader re-checks the state.
            fence(Release);
            slot.method
                .store(pack8(method.as_str().as_bytes()), Relaxed);
            let bytes = path.as_bytes();
            let len = bytes.len().min(PATH_CAP);
            let mut buf = [0u8; PATH_CAP];
            buf[..len].copy_from_slice(&bytes[..len]);
            for (w, chunk) in slot.path.iter().zip(buf.chunks_exact(8)) {
                w.store(pack8(chunk), Relaxed);
            }
            slot.meta
                .store(len as u64 | (u64::from(len < bytes.len()) << 16), Relaxed);
            let since = if self.stamping.load(Relaxed) {
                self.now_stamp()
            } else {
                0
            };
            slot.since.store(since, Relaxed);
            let live = (writing & !TAG) | LIVE;
            slot.state.store(live, Release);
            // Next time, try this slot first: with one request at a time per
            // thread it is free again, and its cache line is already here.
            cursor_set(idx);
            return Name::Slot {
                shard: shard as u32,
                slot: idx as u32,
                state: live,
            };
        }
        s.unnamed.fetch_add(1, Relaxed);
        Name::Unnamed {
            shard: shard as u32,
        }
    }

    // ---- tasks ----

    pub(crate) fn acquire_task(&self, name: Cow<'static, str>) -> Ticket {
        self.inc(self.home());
        let mut t = lock(&self.tasks);
        let entry = Some((name, tokio::time::Instant::now()));
        let key = match t.free.pop() {
            Some(k) => {
                t.slots[k] = entry;
                k
            }
            None => {
                t.slots.push(entry);
                t.slots.len() - 1
            }
        };
        Ticket {
            name: Name::Task { key },
            request: false,
        }
    }

    // ---- release ----

    #[inline]
    pub(crate) fn release(&self, ticket: Ticket) {
        self.release_in(self.home(), ticket)
    }

    #[inline]
    pub(crate) fn release_in(&self, shard: usize, ticket: Ticket) {
        match ticket.name {
            Name::Slot {
                shard: s,
                slot,
                state,
            } => {
                let free = (state & !TAG) | FREE;
                self.shards[s as usize].0.slots[slot as usize]
                    .state
                    .store(free, Release);
            }
            Name::Unnamed { shard: s } => {
                self.shards[s as usize].0.unnamed.fetch_sub(1, Relaxed);
            }
            Name::Task { key } => {
                let mut t = lock(&self.tasks);
                t.slots[key] = None;
                t.free.push(key);
            }
        }
        let prev = self.shards[shard].0.count.fetch_add(-1, AcqRel);
        if prev <= SEALED / 2 {
            // Counted before the decrement that may reach zero: the report
            // is written as soon as the latch is set.
            if ticket.request {
                self.completed_while_draining.fetch_add(1, Relaxed);
            }
            self.add_global(-1);
        }
    }

    // ---- shutdown ----

    fn now_stamp(&self) -> u64 {
        let nanos = tokio::time::Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        (nanos as u64).min(BEFORE_TRIGGER - 2) + 1
    }

    /// Shutdown was triggered: stamp every live request with the trigger time
    /// (a lower bound of its start); later requests stamp themselves.
    #[cold]
    pub(crate) fn stamp_live(&self) {
        if self.stamping.swap(true, AcqRel) {
            return;
        }
        let stamp = self.now_stamp() | BEFORE_TRIGGER;
        for shard in self.shards.iter() {
            for slot in shard.0.slots.iter() {
                if slot.state.load(Acquire) & TAG == LIVE {
                    // Only if unset: a request that started after `stamping`
                    // was raised keeps its own, exact time.
                    let _ = slot.since.compare_exchange(0, stamp, Relaxed, Relaxed);
                }
            }
        }
    }

    /// Switches to exact counting. Idempotent: returns the number of entries
    /// in flight at the switch for the call that did it, `None` after.
    #[cold]
    pub(crate) fn begin_drain(&self) -> Option<usize> {
        if self.draining.swap(true, AcqRel) {
            return None;
        }
        self.stamp_live();
        let mut sum: isize = 0;
        for shard in self.shards.iter() {
            sum += shard.0.count.swap(SEALED, AcqRel);
        }
        // Every operation before a seal is in `sum`; every one after went to
        // `global`. Drop the bias: `global` is exact from here on.
        self.add_global(sum - BIAS);
        Some(sum.max(0) as usize)
    }

    /// True once draining began and nothing was in flight at some moment since.
    pub(crate) fn is_drained(&self) -> bool {
        self.drained.is_set()
    }

    /// Completes once draining began and the count reached zero.
    pub(crate) fn drained(&self) -> Wait<'_> {
        self.drained.wait()
    }

    /// Entries in flight now. Exact when nothing moves (and always exact
    /// once draining has switched); a gauge otherwise.
    pub(crate) fn in_flight(&self) -> usize {
        let mut n: isize = 0;
        let mut sealed = false;
        for shard in self.shards.iter() {
            let v = shard.0.count.load(Acquire);
            if v > SEALED / 2 {
                n += v;
            } else {
                sealed = true;
            }
        }
        if sealed {
            n += self.global.load(Acquire);
            if n >= BIAS / 2 {
                n -= BIAS;
            }
        }
        n.max(0) as usize
    }

    /// Requests (not tasks) that finished after draining began.
    pub(crate) fn completed_while_draining(&self) -> usize {
        self.completed_while_draining.load(Relaxed)
    }

    /// What is alive now, oldest first (requests started before the trigger
    /// first, without exact times).
    #[cold]
    pub(crate) fn snapshot(&self) -> Vec<Live> {
        let mut out = Vec::new();
        let mut unnamed = 0;
        for shard in self.shards.iter() {
            unnamed += shard.0.unnamed.load(Relaxed);
            for slot in shard.0.slots.iter() {
                let s1 = slot.state.load(Acquire);
                if s1 & TAG != LIVE {
                    continue;
                }
                let method = unpack(&[slot.method.load(Relaxed)]);
                let meta = slot.meta.load(Relaxed);
                let words: Vec<u64> = slot.path.iter().map(|w| w.load(Relaxed)).collect();
                let since = slot.since.load(Relaxed);
                fence(Acquire);
                if slot.state.load(Relaxed) != s1 {
                    continue; // reused while we read: that request ended
                }
                let mut path = decode_path(&words, (meta & 0xffff) as usize);
                if meta & (1 << 16) != 0 {
                    path.push('…');
                }
                out.push(Live {
                    kind: Kind::Request { method, path },
                    since: (since != 0).then(|| {
                        self.epoch + std::time::Duration::from_nanos((since & !BEFORE_TRIGGER) - 1)
                    }),
                    lower_bound: since & BEFORE_TRIGGER != 0,
                });
            }
        }
        for (name, since) in lock(&self.tasks).slots.iter().flatten() {
            out.push(Live {
                kind: Kind::Task { name: name.clone() },
                since: Some(*since),
                lower_bound: false,
            });
        }
        out.sort_by_key(|l| l.since);
        if unnamed > 0 {
            out.push(Live {
                kind: Kind::Unnamed { count: unnamed },
                since: None,
                lower_bound: true,
            });
        }
        out
    }
}

#[inline]
fn pack8(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// The stored prefix may end inside a character (it is cut by bytes, for
/// speed): keep the valid part.
fn decode_path(words: &[u64], len: usize) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let b = &bytes[..len.min(bytes.len())];
    let valid = match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) => e.valid_up_to(),
    };
    String::from_utf8_lossy(&b[..valid]).into_owned()
}

fn unpack(words: &[u64]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[derive(Clone, Copy)]
struct ThreadState {
    shard: usize,
    cursor: usize,
}

#[cfg(not(tower_graceful_loom))]
thread_local! {
    static THREAD: Cell<ThreadState> = const { Cell::new(ThreadState { shard: usize::MAX, cursor: 0 }) };
}

#[cfg(not(tower_graceful_loom))]
#[inline]
fn thread_state<R>(f: impl FnOnce(ThreadState) -> R) -> R {
    use std::sync::atomic::AtomicUsize as StdAtomic;
    static NEXT: StdAtomic = StdAtomic::new(0);
    THREAD.with(|c| {
        let mut t = c.get();
        if t.shard == usize::MAX {
            t.shard = NEXT.fetch_add(1, Relaxed);
            c.set(t);
        }
        f(t)
    })
}

#[cfg(not(tower_graceful_loom))]
#[inline]
fn cursor_next() -> usize {
    thread_state(|t| t.cursor)
}

#[cfg(not(tower_graceful_loom))]
#[inline]
fn cursor_set(v: usize) {
    THREAD.with(|c| {
        let mut t = c.get();
        t.cursor = v;
        c.set(t);
    })
}

#[cfg(tower_graceful_loom)]
fn cursor_next() -> usize {
    0
}

#[cfg(tower_graceful_loom)]
fn cursor_set(_: usize) {}

#[cfg(tower_graceful_loom)]
#[allow(dead_code)]
fn _unused(_: Cell<ThreadState>) {}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    use super::*;

    const GET: http::Method = http::Method::GET;

    #[test]
    fn drained_only_after_last_release() {
        let t = Tracker::new(4);
        let a = t.acquire_request_in(0, &GET, "/a");
        let b = t.acquire_request_in(3, &GET, "/b");
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.begin_drain(), Some(2));
        assert_eq!(t.begin_drain(), None, "second begin_drain is a no-op");
        assert!(!t.is_drained());
        assert_eq!(t.in_flight(), 2);
        t.release_in(1, a); // ended on another thread's shard
        assert!(!t.is_drained());
        assert_eq!(t.in_flight(), 1);
        t.release_in(2, b);
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 2);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn cross_shard_release_before_drain_cancels_out() {
        let t = Tracker::new(2);
        let a = t.acquire_request_in(0, &GET, "/");
        t.release_in(1, a); // shard 0 = +1, shard 1 = -1
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.begin_drain(), Some(0));
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 0);
    }

    #[test]
    fn acquire_after_switch_is_counted() {
        let t = Tracker::new(2);
        t.begin_drain();
        assert!(t.is_drained());
        let a = t.acquire_request_in(0, &GET, "/late");
        assert_eq!(t.in_flight(), 1);
        t.release_in(1, a);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn snapshot_names_requests_and_tasks() {
        let t = Tracker::new(2);
        let long = format!("/{}", "é".repeat(40));
        let a = t.acquire_request_in(0, &http::Method::POST, &long);
        let b = t.acquire_task("job".into());
        let c = t.acquire_request_in(1, &http::Method::from_bytes(b"PURGE").unwrap(), "/x");
        let snap = t.snapshot();
        assert_eq!(snap.len(), 3);
        let names: Vec<String> = snap
            .iter()
            .map(|l| match &l.kind {
                Kind::Request { method, path } => format!("{method} {path}"),
                Kind::Task { name } => format!("task {name}"),
                Kind::Unnamed { count } => format!("{count} unnamed"),
            })
            .collect();
        assert!(names.contains(&"PURGE /x".to_owned()), "{names:?}");
        assert!(names.contains(&"task job".to_owned()), "{names:?}");
        let long_name = names.iter().find(|n| n.starts_with("POST")).unwrap();
        assert!(long_name.ends_with('…'), "{long_name}");
        assert!(long_name.len() <= "POST ".len() + PATH_CAP + '…'.len_utf8());
        // Not stamped before the trigger; stamped as a lower bound after.
        assert!(snap
            .iter()
            .filter(|l| matches!(l.kind, Kind::Request { .. }))
            .all(|l| l.since.is_none()));
        t.stamp_live();
        let snap = t.snapshot();
        assert!(snap
            .iter()
            .filter(|l| matches!(l.kind, Kind::Request { .. }))
            .all(|l| l.since.is_some() && l.lower_bound));
        let d = t.acquire_request_in(0, &GET, "/after-trigger");
        let late = t
            .snapshot()
            .into_iter()
            .find(|l| matches!(&l.kind, Kind::Request { path, .. } if path == "/after-trigger"))
            .unwrap();
        assert!(late.since.is_some() && !late.lower_bound);
        for x in [a, b, c, d] {
            t.release_in(0, x);
        }
        assert!(t.snapshot().is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn more_requests_than_slots_are_counted_and_reported_unnamed() {
        let t = Tracker::new(1);
        let tickets: Vec<_> = (0..SLOTS + 10)
            .map(|_| t.acquire_request_in(0, &GET, "/"))
            .collect();
        assert_eq!(t.in_flight(), SLOTS + 10);
        let snap = t.snapshot();
        let unnamed: usize = snap
            .iter()
            .map(|l| match l.kind {
                Kind::Unnamed { count } => count,
                _ => 0,
            })
            .sum();
        let named = snap.len() - usize::from(unnamed > 0);
        assert_eq!(named + unnamed, SLOTS + 10);
        for x in tickets {
            t.release_in(0, x);
        }
        assert_eq!(t.in_flight(), 0);
        assert!(t.snapshot().is_empty());
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod loom_tests {
    use super::*;
    use loom::future::block_on;
    use loom::sync::Arc;
    use loom::thread;

    const GET: http::Method = http::Method::GET;

    /// The last request ends exactly as draining starts: the waiter must wake,
    /// and must not wake before the release.
    #[test]
    fn last_release_races_begin_drain() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let ticket = t.acquire_request_in(1, &GET, "/");
            let t2 = t.clone();
            let releaser = thread::spawn(move || t2.release_in(0, ticket));
            t.begin_drain();
            block_on(t.drained());
            releaser.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// Two requests released on other shards while the switch seals the
    /// shards: never drained early, always drained at the end.
    #[test]
    fn cross_shard_releases_during_switch() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let a = t.acquire_request_in(0, &GET, "/");
            let b = t.acquire_request_in(1, &GET, "/");
            let ta = t.clone();
            let h = thread::spawn(move || {
                ta.release_in(1, a);
                ta.release_in(0, b);
            });
            t.begin_drain();
            block_on(t.drained());
            h.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// A request acquired while the switch runs keeps the latch unset until
    /// it ends; a request live throughout keeps it unset until it ends.
    #[test]
    fn acquire_during_switch_never_drains_early() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let held = t.acquire_request_in(0, &GET, "/");
            let t2 = t.clone();
            let h = thread::spawn(move || {
                let late = t2.acquire_request_in(1, &GET, "/");
                let early = t2.is_drained();
                t2.release_in(0, late);
                early
            });
            t.begin_drain();
            assert!(!t.is_drained(), "`held` is still live");
            let drained_while_late_live = h.join().unwrap();
            assert!(!drained_while_late_live, "`held` was live all along");
            t.release_in(1, held);
            assert!(t.is_drained());
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// Concurrent begin_drain calls: exactly one performs the switch, the bias
    /// is removed once, and the latch is set exactly when nothing is live.
    #[test]
    fn concurrent_begin_drain() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(2));
            let a = t.acquire_request_in(1, &GET, "/");
            let t2 = t.clone();
            let h = thread::spawn(move || t2.begin_drain());
            let mine = t.begin_drain();
            let theirs = h.join().unwrap();
            assert!(mine.is_some() ^ theirs.is_some());
            assert_eq!(mine.or(theirs), Some(1));
            assert!(!t.is_drained());
            t.release_in(0, a);
            assert!(t.is_drained());
        });
    }

    /// A slot released while a snapshot reads it is either reported whole or
    /// skipped, never reported with a torn name.
    #[test]
    fn snapshot_never_reports_a_torn_slot() {
        loom::model(|| {
            let t = Arc::new(Tracker::new(1));
            let a = t.acquire_request_in(0, &GET, "/a");
            let t2 = t.clone();
            let h = thread::spawn(move || {
                t2.release_in(0, a);
                let b = t2.acquire_request_in(0, &http::Method::PUT, "/b");
                t2.release_in(0, b);
            });
            for l in t.snapshot() {
                match l.kind {
                    Kind::Request { method, path } => assert!(
                        (method == "GET" && path == "/a") || (method == "PUT" && path == "/b"),
                        "{method} {path}"
                    ),
                    other => panic!("{other:?}"),
                }
            }
            h.join().unwrap();
        });
    }
}
