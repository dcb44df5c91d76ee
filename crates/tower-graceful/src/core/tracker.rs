//! The in-flight tracker: how many requests and background tasks are alive,
//! which ones, and the exact moment the last one ends after draining began.
//!
//! # Counting: a request's name slot is its count
//!
//! Every request of every core goes through here, so the serving path must
//! touch no cache line that another core writes, and do no more
//! read-modify-writes than a single shared counter would (two: one to start,
//! one to end). Each thread owns a *shard*: a small array of slots. A request
//! claims a free slot of its thread's shard with one compare-exchange and
//! frees it with one `fetch_and`; the number of live slots *is* the count,
//! and the slot also names the request (method and path prefix, written with
//! plain stores before the claim) for the straggler list. Nothing else is
//! touched while serving: no shared counter, no clock.
//!
//! Summing live slots is racy, so, like Linux's per-CPU reference counts, the
//! tracker switches once, when draining begins, to one exact counter:
//!
//! 1. `global` starts at a huge `BIAS`, so that nothing that happens during
//!    the switch can bring it to zero.
//! 2. `begin_drain` **seals** every slot by setting its `SEALED` bit with a
//!    `fetch_or`, and counts the slots that were live. Because the claim, the
//!    release and the seal are read-modify-writes of the same atomic, each
//!    request's start is either before the seal of its slot (so it was live
//!    and inside the sum) or after it (the claim then sees `SEALED` and adds
//!    itself to `global`); its end sees `SEALED` exactly when its start was
//!    counted by one of the two, and then subtracts from `global`. No
//!    operation is lost or counted twice.
//! 3. With every slot sealed, `begin_drain` adds the sum minus `BIAS`.
//!
//! From then on `global` is exact, and whoever brings it to zero sets the
//! `drained` latch ([`Event`]), which also serves waiters that arrive later:
//! the "last request ends as draining starts" race has no losing
//! interleaving (loom models below).
//!
//! A claim tries `PROBES` (4) slots from the shard's hint, then scans the
//! rest. Requests that find no free slot at all (more than `SLOTS` = 64 live
//! on one thread), requests on threads without a shard of their own, and
//! background tasks use the shard's `count` instead: a `fetch_add` whose
//! previous value says whether the shard was sealed (sealing swaps in the
//! `SEALED_COUNT` sentinel), with the same argument as above.
//!
//! # Why a thread owns its shard
//!
//! Only the owning thread claims slots of a shard, so it can write a free
//! slot's name fields *before* the claim, without a "writing" state and the
//! extra read-modify-write that would need. Thread indices come from a small
//! process-wide registry and are given back when a thread exits, so the
//! threads alive at any moment have distinct small indices; a thread whose
//! index is beyond the shard count serves unnamed (counted, not named).
//! Any thread may *release* any slot (a request can end on another worker).
//!
//! # Naming: no clock read while serving
//!
//! No timestamp is taken while serving (a clock read costs as much as all the
//! rest): when shutdown is triggered, every live slot is stamped with the
//! trigger time, and requests that start afterwards record their own. A
//! straggler's age is therefore exact if it started after the trigger, and
//! otherwise a lower bound ("in flight since before the trigger"), which is
//! what tells a user what blocked the shutdown. Background tasks (rare,
//! named by the user) sit in a small locked list.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::core::event::{Event, Wait};
use crate::core::handle::{Kept, SharedPtr};
use crate::core::sync::{fence, lock, AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Mutex};

/// A sealed shard counter's value stays near this, far below any real count.
const SEALED_COUNT: isize = isize::MIN / 2;
/// Far above any real count: keeps `global` away from zero during the switch.
const BIAS: isize = isize::MAX / 4;

#[cfg(not(tower_graceful_loom))]
const SLOTS: usize = 64;
#[cfg(tower_graceful_loom)]
const SLOTS: usize = 2;
/// Slots a claim looks at (starting from the shard's hint) before it gives up
/// and counts the request unnamed.
#[cfg(not(tower_graceful_loom))]
const PROBES: usize = 4;
#[cfg(tower_graceful_loom)]
const PROBES: usize = 2;
#[cfg(not(tower_graceful_loom))]
const PATH_WORDS: usize = 6;
#[cfg(tower_graceful_loom)]
const PATH_WORDS: usize = 1;
/// The longest path prefix a slot keeps.
pub(crate) const PATH_CAP: usize = PATH_WORDS * 8;

/// Slot `state` bits: the rest is a generation, bumped by every claim, that
/// lets a reader notice that the slot was reused while it read the name.
const LIVE: u64 = 1;
const SEALED: u64 = 2;
const GEN: u64 = 4;
/// `since` bit: the time is the trigger's, a lower bound of the real start.
const BEFORE_TRIGGER: u64 = 1 << 63;

struct Slot {
    /// `generation * GEN | SEALED? | LIVE?`.
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
            state: AtomicU64::new(0),
            method: AtomicU64::new(0),
            meta: AtomicU64::new(0),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
            since: AtomicU64::new(0),
        }
    }
}

struct Shard {
    /// Unnamed requests and tasks: `fetch_add`ed by any thread whose home
    /// this shard is; swapped for `SEALED_COUNT` by the switch.
    count: AtomicIsize,
    /// Requests that found no free slot (a gauge for the report).
    unnamed: AtomicIsize,
    /// Draining rejections by threads whose home this shard is.
    rejected: AtomicUsize,
    /// Responses that announced `Connection: close` (lame duck).
    closes: AtomicUsize,
    /// Where the owner looks first for a free slot (written by the owner
    /// only: plain loads and stores).
    hint: AtomicUsize,
    /// References to the shared state taken (+) and dropped (-) by threads
    /// whose home this shard is: layers, services and their per-request
    /// clones, signals, handles (see `core::handle`). Swapped for
    /// `SEALED_COUNT` when the last coordinator handle is gone.
    refs: AtomicIsize,
    slots: [Slot; SLOTS],
}

/// Keeps each shard's header on its own cache line(s).
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

/// What names a request in its slot, read out of the request: the method as
/// a number, so that nothing holds a reference into the request (which lets
/// the caller move it into the inner service without a copy).
#[derive(Clone, Copy)]
pub(crate) struct Name<'p> {
    /// The method, packed (see [`pack8`]).
    method: u64,
    path: &'p str,
}

impl<'p> Name<'p> {
    #[inline(always)]
    pub(crate) fn of(method: &http::Method, path: &'p str) -> Self {
        // GET without the table lookup `as_str` is.
        let method = if *method == http::Method::GET {
            GET_PACKED
        } else {
            pack8(method.as_str().as_bytes())
        };
        Self { method, path }
    }

    /// The request's path.
    #[inline(always)]
    pub(crate) fn path(&self) -> &'p str {
        self.path
    }
}

/// A request's hold on the count: the slot that names it, or `None` when it
/// is counted unnamed. Not `Clone`: released exactly once.
pub(crate) struct RequestTicket<'t>(Option<&'t Slot>);

/// What a claim found: whether the request is counted, and in which regime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Counted before draining began (the common case).
    Serving,
    /// Counted while draining (through the exact counter): the drain waits
    /// for it.
    Draining,
}

/// A claim refused: the drain had already completed (the exact counter had
/// reached zero), so nothing may start any more. Nothing is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refused;

impl fmt::Debug for RequestTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestTicket")
            .field(&if self.0.is_some() { "named" } else { "unnamed" })
            .finish()
    }
}

/// A request's count, released when dropped: what [`InFlight`] and
/// [`Graceful`] keep in their response future, then in the response body.
/// While it lives, the shared state does (`core::handle`): its pointer is
/// what a counted request uses to reach the state.
///
/// [`InFlight`]: crate::in_flight::InFlight
/// [`Graceful`]: crate::Graceful
pub(crate) struct RequestGuard {
    shared: SharedPtr,
    slot: Option<Kept<Slot>>,
}

impl RequestGuard {
    /// Counts a request, or refuses it once the drain has completed. The
    /// claim and the switch's seal are read-modify-writes of the same word,
    /// so whoever decides on the result decides on what the counter says:
    /// there is no window between "checked" and "counted".
    #[inline(always)]
    pub(crate) fn new(shared: SharedPtr, name: Name<'_>) -> Result<(Self, Admission), Refused> {
        let (RequestTicket(slot), admission) = shared.tracker.acquire_named(name)?;
        let slot = slot.map(Kept::part_of_state);
        Ok((Self { shared, slot }, admission))
    }

    /// The state, valid while the guard lives.
    #[inline(always)]
    pub(crate) fn shared(&self) -> SharedPtr {
        self.shared
    }
}

/// A request's `+1` in the exact counter, kept after its slot was freed:
/// dropped later, it ends the request (see [`RequestGuard::release_holding`]).
/// Like a guard, it keeps the state alive.
pub(crate) struct Hold {
    shared: SharedPtr,
}

impl Hold {
    /// The state, valid while the hold lives.
    pub(crate) fn shared(&self) -> SharedPtr {
        self.shared
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let shared = self.shared;
        shared.free_if(shared.tracker.end_while_draining());
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hold")
    }
}

impl RequestGuard {
    /// Frees the request's slot; if draining has begun, keeps its count in
    /// the exact counter and returns it as a [`Hold`], so the caller decides
    /// when the request ends (the reuse grace). Before draining it is a
    /// plain release: the decision costs nothing on the serving path, it is
    /// the same read-modify-write, whose previous value says "sealed".
    #[inline(always)]
    pub(crate) fn release_holding(self) -> Option<Hold> {
        let this = std::mem::ManuallyDrop::new(self);
        let sealed = match this.slot {
            Some(slot) => {
                let prev = slot.state.fetch_sub(LIVE, AcqRel);
                debug_assert!(prev & LIVE != 0, "slot released twice");
                prev & SEALED != 0
            }
            None => {
                let tracker = &this.shared.tracker;
                let s = &tracker.shards[tracker.home()].0;
                s.unnamed.fetch_sub(1, Relaxed);
                s.count.fetch_add(-1, AcqRel) <= SEALED_COUNT / 2
            }
        };
        // Not sealed: a plain release before draining, which cannot end the
        // counter (it is not exact yet), so nothing is freed here.
        // `then`, not `then_some`: an unused `Hold` would end the request.
        sealed.then(|| Hold {
            shared: this.shared,
        })
    }

    /// Releases a request that is turned away after it was counted: like a
    /// drop, but it does not count as a request completed while draining.
    #[cold]
    pub(crate) fn turn_away(self) {
        let this = std::mem::ManuallyDrop::new(self);
        let shared = this.shared;
        shared.free_if(
            shared
                .tracker
                .release_turned_away(RequestTicket(this.slot.as_deref())),
        );
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        let shared = self.shared;
        shared.free_if(
            shared
                .tracker
                .release_request(RequestTicket(self.slot.as_deref())),
        );
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("named", &self.slot.is_some())
            .finish()
    }
}

/// Whether the caller was the last to let go of the shared state and must
/// free it (see `core::handle`). Never ignored.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Free(pub(crate) bool);

/// A background task's hold on the count.
#[derive(Debug)]
pub(crate) struct TaskTicket {
    key: usize,
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
    /// The trigger's stamp (with `BEFORE_TRIGGER`), 0 before the trigger.
    trigger_stamp: AtomicU64,
    drained: Event,
    completed_while_draining: AtomicUsize,
    /// Requests counted after the switch (served while draining).
    admitted_while_draining: AtomicUsize,
    tasks: Mutex<Tasks>,
    epoch: tokio::time::Instant,
    /// Whether references are counted (false: the state is kept for the
    /// process, see `Builder::process_lifetime`). Never changes.
    counting_refs: bool,
    /// The references' exact count once sealed (`BIAS` before).
    refs_global: AtomicIsize,
    refs_sealed: AtomicBool,
    /// Who still holds the state: the `REFS_GONE` bit (no reference left),
    /// the `COUNT_GONE` bit (the exact counter reached zero: no request or task
    /// left). Whoever completes the pair frees it.
    gone: AtomicUsize,
}

const REFS_GONE: usize = 1;
const COUNT_GONE: usize = 2;
/// One of the coordinator's own tasks (driver, OS-signal listener), in the
/// rest of `gone`: they use the state without a reference, so that they do
/// not keep it wanted, and the state is freed only after the last one ends.
const INTERNAL: usize = 4;

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
        let shards = shards.clamp(1, 1 << 15);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Padded(Shard {
                        count: AtomicIsize::new(0),
                        unnamed: AtomicIsize::new(0),
                        rejected: AtomicUsize::new(0),
                        closes: AtomicUsize::new(0),
                        hint: AtomicUsize::new(0),
                        refs: AtomicIsize::new(0),
                        slots: std::array::from_fn(|_| Slot::new()),
                    })
                })
                .collect(),
            global: AtomicIsize::new(BIAS),
            draining: AtomicBool::new(false),
            stamping: AtomicBool::new(false),
            trigger_stamp: AtomicU64::new(0),
            drained: Event::new(),
            completed_while_draining: AtomicUsize::new(0),
            admitted_while_draining: AtomicUsize::new(0),
            tasks: Mutex::new(Tasks::default()),
            epoch: tokio::time::Instant::now(),
            counting_refs: true,
            refs_global: AtomicIsize::new(BIAS),
            refs_sealed: AtomicBool::new(false),
            gone: AtomicUsize::new(0),
        }
    }

    /// With `counting_refs = false`, the state this tracker is part of is
    /// kept for the process (references are not counted).
    pub(crate) fn counting_refs(mut self, counting: bool) -> Self {
        self.counting_refs = counting;
        self
    }

    /// A shard count for this machine: room for every worker thread of a
    /// runtime sized to the cores, plus the threads that come and go
    /// (`block_in_place`, blocking pools, a second runtime). About 5 KiB each.
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
                .clamp(8, 512)
        }
    }

    /// The shard of this thread's shared counters (its own shard if it has
    /// one; any thread may add there).
    #[inline]
    fn home(&self) -> usize {
        let index = thread_index::current();
        let n = self.shards.len();
        // A thread with a shard of its own (the common case) skips the
        // division (tens of cycles; this runs twice per service clone).
        if index < n {
            index
        } else {
            index % n
        }
    }

    /// `global += delta`; the call that brings it to zero sets the drained
    /// latch and returns whether the state may now be freed (see
    /// [`Free`]). Callers touch nothing of the state after a `Free(true)`.
    #[cold]
    fn add_global(&self, delta: isize) -> Free {
        if self.global.fetch_add(delta, AcqRel) + delta == 0 {
            self.drained.set();
            return self.let_go(COUNT_GONE);
        }
        Free(false)
    }

    /// One of the two owners of the state lets go; `Free(true)` for the
    /// second. The last access to the state of whoever gets `Free(false)`.
    fn let_go(&self, who: usize) -> Free {
        let prev = self.gone.fetch_or(who, AcqRel);
        debug_assert!(prev & who == 0, "let go twice");
        Free(prev | who == REFS_GONE | COUNT_GONE)
    }

    /// One more of the coordinator's own tasks uses the state. Only called
    /// by someone who keeps the state alive meanwhile (a reference, or
    /// another of these).
    pub(crate) fn internal_started(&self) {
        self.gone.fetch_add(INTERNAL, AcqRel);
    }

    /// One of the coordinator's own tasks is done with the state; the last
    /// of all owners to go frees it.
    pub(crate) fn internal_ended(&self) -> Free {
        let prev = self.gone.fetch_sub(INTERNAL, AcqRel);
        Free(prev - INTERNAL == REFS_GONE | COUNT_GONE)
    }

    // ---- references to the shared state ----

    /// `+1` reference (a clone of a handle). Relaxed, as for `Arc`: a new
    /// reference is made from one that is alive, so the count cannot be
    /// zero meanwhile.
    #[inline]
    pub(crate) fn ref_acquire(&self) {
        if !self.counting_refs {
            return;
        }
        let c = &self.shards[self.home()].0.refs;
        if c.fetch_add(1, Relaxed) <= SEALED_COUNT / 2 {
            self.refs_global.fetch_add(1, Relaxed);
        }
    }

    /// `-1` reference. Before the seal, one uncontended read-modify-write on
    /// the thread's own shard. Returns whether this was the last reference
    /// (possible only after the seal): the caller then calls
    /// [`orphaned`](Self::orphaned).
    #[inline]
    pub(crate) fn ref_release(&self) -> bool {
        if !self.counting_refs {
            return false; // kept for the process: never the last
        }
        // Release: what this holder did happens before whoever frees.
        let c = &self.shards[self.home()].0.refs;
        if c.fetch_add(-1, Release) > SEALED_COUNT / 2 {
            return false;
        }
        self.ref_release_sealed()
    }

    #[cold]
    fn ref_release_sealed(&self) -> bool {
        self.refs_global.fetch_add(-1, AcqRel) == 1
    }

    /// The last coordinator handle is gone: from now on references are
    /// counted exactly, so the release that ends the last one knows it.
    /// Returns whether none was left (the caller then calls `orphaned`).
    /// Idempotent (`false` after the first call).
    #[cold]
    pub(crate) fn seal_refs(&self) -> bool {
        if !self.counting_refs || self.refs_sealed.swap(true, AcqRel) {
            return false;
        }
        let mut sum: isize = 0;
        for shard in self.shards.iter() {
            sum += shard.0.refs.swap(SEALED_COUNT, AcqRel);
        }
        let delta = sum - BIAS;
        self.refs_global.fetch_add(delta, AcqRel) + delta == 0
    }

    /// No reference is left, so nothing can start a request or a task any
    /// more: switch the counter to exact counting (if draining did not) so
    /// that the last request or task to end knows it, then let go. Returns
    /// whether the state may be freed now.
    #[cold]
    pub(crate) fn orphaned(&self) -> Free {
        // If the switch finds nothing in flight it lets go for the count,
        // which frees nothing yet: `REFS_GONE` is not set.
        let switched = self.begin_drain();
        debug_assert!(!matches!(switched, Some((_, Free(true)))));
        self.let_go(REFS_GONE)
    }

    /// `global += 1` unless it is zero. Zero is terminal: once the switch is
    /// done and the last entry has ended, the drain is complete and whoever
    /// waits for it (hooks closing pools, the process exiting) may already be
    /// running, so nothing may start again. A plain `fetch_add` would let a
    /// request that read "not drained yet" a moment earlier resurrect the
    /// count after the latch fired (and let a second request slip in while
    /// the first is being turned away); the compare-exchange makes "is it
    /// zero?" and "count me" one step. Only claims after the switch get here.
    #[cold]
    fn try_add_global(&self) -> Result<(), Refused> {
        // Acquire on failure and success: a refused claim sees everything the
        // last release published (it may answer from that state).
        let mut cur = self.global.load(Acquire);
        loop {
            if cur == 0 {
                return Err(Refused);
            }
            match self
                .global
                .compare_exchange_weak(cur, cur + 1, AcqRel, Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    /// `+1` through `shard`'s counter (and through `global` if the shard is
    /// sealed, refused there once the drain completed).
    #[inline]
    fn add_one(&self, shard: usize) -> Result<Admission, Refused> {
        // AcqRel here and on slots: the release that ends a request publishes
        // its work to the sealing swap (or, when sealed, to the `global`
        // update) and so to whoever the drained latch wakes.
        let count = &self.shards[shard].0.count;
        let prev = count.fetch_add(1, AcqRel);
        if prev > SEALED_COUNT / 2 {
            return Ok(Admission::Serving);
        }
        match self.try_add_global() {
            Ok(()) => Ok(Admission::Draining),
            Err(refused) => {
                // Undo the shard's +1: sealed, so it is not part of any sum.
                count.fetch_add(-1, AcqRel);
                Err(refused)
            }
        }
    }

    /// `-1` through `shard`'s counter. Returns whether it was sealed (and so
    /// went through `global`).
    #[inline]
    fn sub_one(&self, shard: usize) -> Free {
        let prev = self.shards[shard].0.count.fetch_add(-1, AcqRel);
        if prev <= SEALED_COUNT / 2 {
            return self.add_global(-1);
        }
        Free(false)
    }

    // ---- requests ----

    /// Counts a request started on this thread, named in this thread's shard
    /// when the thread has one; refused once the drain has completed.
    #[inline(always)]
    pub(crate) fn acquire_named(
        &self,
        name: Name<'_>,
    ) -> Result<(RequestTicket<'_>, Admission), Refused> {
        let index = thread_index::current();
        if index < self.shards.len() {
            self.acquire_in(index, name)
        } else {
            self.acquire_unnamed(index % self.shards.len())
        }
    }

    /// Counts a request in `shard`. Only one thread at a time may claim in a
    /// given shard (its owner); any thread may release.
    #[cfg(test)]
    pub(crate) fn acquire_request_in(
        &self,
        shard: usize,
        method: &http::Method,
        path: &str,
    ) -> Result<(RequestTicket<'_>, Admission), Refused> {
        self.acquire_in(shard, Name::of(method, path))
    }

    #[inline(always)]
    fn acquire_in(
        &self,
        shard: usize,
        name: Name<'_>,
    ) -> Result<(RequestTicket<'_>, Admission), Refused> {
        let s = &self.shards[shard].0;
        let hint = s.hint.load(Relaxed);
        for i in 0..PROBES {
            let idx = (hint + i) % SLOTS;
            let slot = &s.slots[idx];
            // Acquire: a release on another thread freed it; its reads of the
            // old name happen before the writes below.
            let st = slot.state.load(Acquire);
            if st & LIVE != 0 {
                continue;
            }
            self.write_name(slot, name);
            let admission = self.claim(slot)?;
            if idx != hint {
                // Next time, look here first: with one request at a time per
                // thread it is free again, and its cache line is already here.
                s.hint.store(idx, Relaxed);
            }
            return Ok((RequestTicket(Some(slot)), admission));
        }
        self.acquire_scan(shard, hint, name)
    }

    /// The few slots after the hint are busy (a burst on this thread): look
    /// at all the others before counting the request unnamed, so requests
    /// are named up to `SLOTS` live on one thread.
    #[cold]
    #[inline(never)]
    fn acquire_scan(
        &self,
        shard: usize,
        hint: usize,
        name: Name<'_>,
    ) -> Result<(RequestTicket<'_>, Admission), Refused> {
        let s = &self.shards[shard].0;
        for i in PROBES..SLOTS {
            let idx = (hint + i) % SLOTS;
            let slot = &s.slots[idx];
            if slot.state.load(Acquire) & LIVE != 0 {
                continue;
            }
            self.write_name(slot, name);
            let admission = self.claim(slot)?;
            s.hint.store(idx, Relaxed);
            return Ok((RequestTicket(Some(slot)), admission));
        }
        self.acquire_unnamed(shard)
    }

    /// Writes the name into a free slot of this thread's shard (seqlock-style
    /// for `snapshot`: a reader that saw the previous generation live notices
    /// the change of `state` and drops what it read).
    #[inline]
    fn write_name(&self, slot: &Slot, name: Name<'_>) {
        fence(Release);
        slot.method.store(name.method, Relaxed);
        let bytes = name.path.as_bytes();
        let len = bytes.len().min(PATH_CAP);
        let mut chunks = bytes[..len].chunks(8);
        for w in slot.path.iter() {
            match chunks.next() {
                Some(c) => w.store(pack8(c), Relaxed),
                None => break,
            }
        }
        slot.meta
            .store(len as u64 | (u64::from(len < bytes.len()) << 16), Relaxed);
        let since = if self.stamping.load(Relaxed) {
            self.now_stamp()
        } else {
            0
        };
        slot.since.store(since, Relaxed);
    }

    /// Makes a free slot live: the request's +1. One `fetch_add` (no retry
    /// loop): nobody but the owner changes a free slot except the switch,
    /// which only sets `SEALED`, and adding `GEN | LIVE` to a free slot sets
    /// `LIVE` and bumps the generation whatever that bit is.
    #[inline]
    fn claim(&self, slot: &Slot) -> Result<Admission, Refused> {
        let prev = slot.state.fetch_add(GEN | LIVE, AcqRel);
        debug_assert!(prev & LIVE == 0, "claimed a live slot");
        if prev & SEALED == 0 {
            return Ok(Admission::Serving);
        }
        self.claim_sealed(slot)
    }

    /// Sealed while free: the switch did not count this slot, so the request
    /// counts itself in `global` (before it can end: that is after we
    /// return), or gives the slot back if the drain already completed.
    #[cold]
    fn claim_sealed(&self, slot: &Slot) -> Result<Admission, Refused> {
        match self.try_add_global() {
            Ok(()) => Ok(Admission::Draining),
            Err(refused) => {
                // Free the slot without the `-1` a release would send to
                // `global`: this claim never counted there.
                slot.state.fetch_sub(LIVE, AcqRel);
                Err(refused)
            }
        }
    }

    #[cold]
    fn acquire_unnamed(&self, shard: usize) -> Result<(RequestTicket<'_>, Admission), Refused> {
        let admission = self.add_one(shard)?;
        self.shards[shard].0.unnamed.fetch_add(1, Relaxed);
        Ok((RequestTicket(None), admission))
    }

    /// The request's -1.
    #[inline]
    pub(crate) fn release_request(&self, ticket: RequestTicket<'_>) -> Free {
        match ticket.0 {
            Some(slot) => self.release_named(slot),
            None => self.release_unnamed(self.home()),
        }
    }

    /// [`release_request`](Self::release_request), with `shard` standing for
    /// the releasing thread's shard (tests and loom models).
    #[cfg(test)]
    pub(crate) fn release_request_in(&self, shard: usize, ticket: RequestTicket<'_>) -> Free {
        match ticket.0 {
            Some(slot) => self.release_named(slot),
            None => self.release_unnamed(shard),
        }
    }

    /// Like [`release_request`](Self::release_request) for a request turned
    /// away right after it was counted (not a completion).
    #[cold]
    fn release_turned_away(&self, ticket: RequestTicket<'_>) -> Free {
        let sealed = match ticket.0 {
            Some(slot) => slot.state.fetch_sub(LIVE, AcqRel) & SEALED != 0,
            None => {
                let s = &self.shards[self.home()].0;
                s.unnamed.fetch_sub(1, Relaxed);
                s.count.fetch_add(-1, AcqRel) <= SEALED_COUNT / 2
            }
        };
        if sealed {
            return self.add_global(-1);
        }
        Free(false)
    }

    #[inline]
    fn release_named(&self, slot: &Slot) -> Free {
        // `fetch_sub` clears the set `LIVE` bit like `fetch_and` would, but is
        // one `lock xadd` on x86 where `fetch_and` is a compare-exchange loop.
        let prev = slot.state.fetch_sub(LIVE, AcqRel);
        debug_assert!(prev & LIVE != 0, "slot released twice");
        if prev & SEALED != 0 {
            return self.end_while_draining();
        }
        Free(false)
    }

    #[cold]
    fn end_while_draining(&self) -> Free {
        // Counted before the decrement that may reach zero: the report is
        // written as soon as the latch is set.
        self.completed_while_draining.fetch_add(1, Relaxed);
        self.add_global(-1)
    }

    #[cold]
    fn release_unnamed(&self, shard: usize) -> Free {
        let s = &self.shards[shard].0;
        s.unnamed.fetch_sub(1, Relaxed);
        let prev = s.count.fetch_add(-1, AcqRel);
        if prev <= SEALED_COUNT / 2 {
            return self.end_while_draining();
        }
        Free(false)
    }

    /// Counts a request admitted while draining and served.
    #[cold]
    pub(crate) fn count_served_while_draining(&self) {
        self.admitted_while_draining.fetch_add(1, Relaxed);
    }

    /// Requests admitted after draining began and served.
    pub(crate) fn admitted_while_draining(&self) -> usize {
        self.admitted_while_draining.load(Relaxed)
    }

    // ---- rejections ----

    /// Counts a draining rejection on this thread's shard.
    pub(crate) fn count_rejected(&self) {
        self.shards[self.home()].0.rejected.fetch_add(1, Relaxed);
    }

    /// Draining rejections so far (a sum over the shards).
    pub(crate) fn rejected(&self) -> usize {
        self.shards.iter().map(|s| s.0.rejected.load(Relaxed)).sum()
    }

    /// Counts a response that announced `Connection: close`.
    #[cold]
    pub(crate) fn count_close(&self) {
        self.shards[self.home()].0.closes.fetch_add(1, Relaxed);
    }

    /// Responses that announced `Connection: close` so far.
    pub(crate) fn closes(&self) -> usize {
        self.shards.iter().map(|s| s.0.closes.load(Relaxed)).sum()
    }

    // ---- tasks ----

    /// Counts a background task, or refuses it once the drain has completed
    /// (nobody waits for it any more).
    pub(crate) fn acquire_task(&self, name: Cow<'static, str>) -> Result<TaskTicket, Refused> {
        self.add_one(self.home())?;
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
        Ok(TaskTicket { key })
    }

    pub(crate) fn release_task(&self, ticket: TaskTicket) -> Free {
        {
            let mut t = lock(&self.tasks);
            t.slots[ticket.key] = None;
            t.free.push(ticket.key);
        }
        self.sub_one(self.home())
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
        self.trigger_stamp.store(stamp, Release);
        for shard in self.shards.iter() {
            for slot in shard.0.slots.iter() {
                if slot.state.load(Acquire) & LIVE != 0 {
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
    pub(crate) fn begin_drain(&self) -> Option<(usize, Free)> {
        if self.draining.swap(true, AcqRel) {
            return None;
        }
        self.stamp_live();
        let mut sum: isize = 0;
        for shard in self.shards.iter() {
            sum += shard.0.count.swap(SEALED_COUNT, AcqRel);
            for slot in shard.0.slots.iter() {
                if slot.state.fetch_or(SEALED, AcqRel) & LIVE != 0 {
                    sum += 1;
                }
            }
        }
        // Every start before a seal is in `sum`; every one after went to
        // `global`. Drop the bias: `global` is exact from here on.
        let free = self.add_global(sum - BIAS);
        Some((sum.max(0) as usize, free))
    }

    /// True once draining began and nothing was in flight at some moment since.
    pub(crate) fn is_drained(&self) -> bool {
        self.drained.is_set()
    }

    /// Completes once draining began and the count reached zero.
    pub(crate) fn drained(&self) -> Wait<'_> {
        self.drained.wait()
    }

    /// The drained latch itself.
    pub(crate) fn drained_event(&self) -> &Event {
        &self.drained
    }

    /// Entries in flight now: exact once draining has switched, and before
    /// that exact when nothing moves (a gauge otherwise). Before the switch it
    /// reads every slot (`shards × SLOTS` loads): fine for metrics, not for a
    /// per-request path.
    pub(crate) fn in_flight(&self) -> usize {
        let g = self.global.load(Acquire);
        if g < BIAS / 2 {
            return g.max(0) as usize; // switched: exact
        }
        let mut n: isize = 0;
        for shard in self.shards.iter() {
            let v = shard.0.count.load(Acquire);
            if v > SEALED_COUNT / 2 {
                n += v;
            }
            for slot in shard.0.slots.iter() {
                let st = slot.state.load(Relaxed);
                // Mid-switch, sealed live slots are already in `global`.
                if st & (LIVE | SEALED) == LIVE {
                    n += 1;
                }
            }
        }
        if self.draining.load(Acquire) {
            n += g - BIAS;
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
        let mut unnamed: isize = 0;
        for shard in self.shards.iter() {
            unnamed += shard.0.unnamed.load(Relaxed);
            for slot in shard.0.slots.iter() {
                let s1 = slot.state.load(Acquire);
                if s1 & LIVE == 0 {
                    continue;
                }
                let method = unpack(&[slot.method.load(Relaxed)]);
                let meta = slot.meta.load(Relaxed);
                let words: Vec<u64> = slot.path.iter().map(|w| w.load(Relaxed)).collect();
                let mut since = slot.since.load(Relaxed);
                fence(Acquire);
                // The seal changes no name: ignore that bit.
                if slot.state.load(Relaxed) | SEALED != s1 | SEALED {
                    continue; // reused while we read: that request ended
                }
                if since == 0 {
                    // Named before it could see the trigger, claimed after
                    // the trigger's stamping scan: it started no later than
                    // the trigger (give or take that window), so the
                    // trigger's time is its lower bound, as for the others.
                    since = self.trigger_stamp.load(Acquire);
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
                kind: Kind::Unnamed {
                    count: unnamed as usize,
                },
                since: None,
                lower_bound: true,
            });
        }
        out
    }
}

// Kept apart from the block above so that it merges cleanly with changes
// there; read only by the metrics emitter.
#[cfg(feature = "metrics")]
impl Tracker {
    /// Tracked tasks alive now (takes the tasks' lock: for gauges only).
    pub(crate) fn tasks_in_flight(&self) -> usize {
        let t = lock(&self.tasks);
        t.slots.len() - t.free.len()
    }
}

/// `pack8(b"GET")`.
const GET_PACKED: u64 = u64::from_le_bytes(*b"GET\0\0\0\0\0");

/// Up to 8 bytes, little-endian, zero-padded; without a call to `memcpy`.
#[inline]
fn pack8(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    } else if n >= 4 {
        // Two overlapping 4-byte reads; the overlap holds the same bytes.
        let lo = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let hi = u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]));
        lo | (hi << ((n - 4) * 8))
    } else if n >= 2 {
        let lo = u64::from(u16::from_le_bytes([b[0], b[1]]));
        let hi = u64::from(u16::from_le_bytes([b[n - 2], b[n - 1]]));
        lo | (hi << ((n - 2) * 8))
    } else if n == 1 {
        u64::from(b[0])
    } else {
        0
    }
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

/// Small per-thread indices, unique among the threads alive at any moment:
/// index `i` owns shard `i` of every tracker.
#[cfg(not(tower_graceful_loom))]
mod thread_index {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Not assigned yet.
    const UNSET: usize = usize::MAX;
    /// The thread is exiting (or could not register): it owns no shard.
    pub(super) const RETIRED: usize = usize::MAX - 1;

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
    pub(super) fn current() -> usize {
        let i = INDEX.with(Cell::get);
        if i == UNSET {
            assign()
        } else {
            i
        }
    }

    #[cold]
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
mod thread_index {
    pub(super) fn current() -> usize {
        0
    }
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    // A bare tracker has no owner that lets go: `Free` is always `false`.
    #![allow(unused_must_use)]

    use super::*;

    const GET: http::Method = http::Method::GET;

    #[test]
    fn drained_only_after_last_release() {
        let t = Tracker::new(4);
        let a = t.acquire_request_in(0, &GET, "/a").unwrap().0;
        let b = t.acquire_request_in(3, &GET, "/b").unwrap().0;
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.begin_drain().map(|(n, _)| n), Some(2));
        assert_eq!(t.begin_drain(), None, "second begin_drain is a no-op");
        assert!(!t.is_drained());
        assert_eq!(t.in_flight(), 2);
        t.release_request_in(1, a); // ended on another thread's shard
        assert!(!t.is_drained());
        assert_eq!(t.in_flight(), 1);
        t.release_request_in(2, b);
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 2);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn nothing_is_admitted_once_the_drain_completed() {
        let t = Tracker::new(2);
        let a = t.acquire_request_in(0, &GET, "/a").unwrap().0;
        t.begin_drain();
        // Counted through the exact counter while draining.
        let (b, admission) = t.acquire_request_in(1, &GET, "/b").unwrap();
        assert_eq!(admission, Admission::Draining);
        t.release_request_in(0, a);
        t.release_request_in(0, b);
        assert!(t.is_drained());
        // Zero is terminal: requests (named or not) and tasks are refused,
        // and refusing leaves the count and the latch as they were.
        assert_eq!(t.acquire_request_in(0, &GET, "/late").err(), Some(Refused));
        assert_eq!(t.acquire_unnamed(1).err(), Some(Refused));
        assert!(t.acquire_task("late job".into()).is_err());
        assert_eq!(t.in_flight(), 0);
        assert!(t.is_drained());
        assert!(
            t.snapshot().is_empty(),
            "a refused claim leaves no live slot"
        );
    }

    #[test]
    fn refused_slot_is_reusable_and_generation_moves() {
        let t = Tracker::new(1);
        t.begin_drain();
        assert!(t.is_drained());
        for _ in 0..(SLOTS * 3) {
            assert!(t.acquire_request_in(0, &GET, "/").is_err());
        }
        assert_eq!(t.in_flight(), 0);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn requests_are_named_up_to_slots_per_thread_after_a_burst() {
        let t = Tracker::new(1);
        // A burst fills every slot (in order: ticket i is slot i, the hint
        // ends on the last); all but the first three and the last end.
        let mut tickets: Vec<_> = (0..SLOTS)
            .map(|_| Some(t.acquire_request_in(0, &GET, "/burst").unwrap().0))
            .collect();
        for x in tickets.iter_mut().take(SLOTS - 1).skip(PROBES - 1) {
            t.release_request_in(0, x.take().unwrap());
        }
        // The probe window from the hint (the last slot, then the first
        // three) is busy; the rest is free: the next request is named.
        let next = t.acquire_request_in(0, &GET, "/after-burst").unwrap().0;
        let named: Vec<String> = t
            .snapshot()
            .into_iter()
            .filter_map(|l| match l.kind {
                Kind::Request { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        assert!(named.contains(&"/after-burst".to_owned()), "{named:?}");
        assert_eq!(named.len(), PROBES + 1);
        t.release_request_in(0, next);
        for x in tickets.into_iter().flatten() {
            t.release_request_in(0, x);
        }
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_request_named_before_the_trigger_and_claimed_after_is_a_lower_bound() {
        let t = Tracker::new(1);
        let slot = &t.shards[0].0.slots[0];
        // Named while not stamping (since = 0) ...
        t.write_name(slot, Name::of(&GET, "/raced"));
        // ... the trigger's scan runs before the claim ...
        t.stamp_live();
        // ... and the claim lands after it.
        t.claim(slot).unwrap();
        let snap = t.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap[0].since.is_some(), "an age, not zero");
        assert!(snap[0].lower_bound, "a lower bound from the trigger");
        t.release_request(RequestTicket(Some(slot)));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn cross_shard_release_before_drain_cancels_out() {
        let t = Tracker::new(2);
        let a = t.acquire_request_in(0, &GET, "/").unwrap().0;
        t.release_request_in(1, a); // shard 0 = +1, shard 1 = -1
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.begin_drain().map(|(n, _)| n), Some(0));
        assert!(t.is_drained());
        assert_eq!(t.completed_while_draining(), 0);
    }

    #[test]
    fn acquire_after_switch_is_counted() {
        let t = Tracker::new(2);
        let held = t.acquire_request_in(0, &GET, "/held").unwrap().0;
        t.begin_drain();
        let (a, admission) = t.acquire_request_in(0, &GET, "/late").unwrap();
        assert_eq!(admission, Admission::Draining);
        assert_eq!(t.in_flight(), 2);
        t.release_request_in(1, a);
        assert_eq!(t.in_flight(), 1);
        assert!(!t.is_drained());
        t.release_request_in(1, held);
        assert!(t.is_drained());
    }

    #[test]
    fn get_is_packed_as_every_other_method_is() {
        assert_eq!(Name::of(&GET, "/").method, pack8(b"GET"));
        for m in [
            http::Method::POST,
            http::Method::HEAD,
            http::Method::from_bytes(b"GETS").unwrap(),
        ] {
            assert_eq!(Name::of(&m, "/").method, pack8(m.as_str().as_bytes()));
        }
    }

    #[test]
    fn snapshot_names_requests_and_tasks() {
        let t = Tracker::new(2);
        let long = format!("/{}", "é".repeat(40));
        let a = t
            .acquire_request_in(0, &http::Method::POST, &long)
            .unwrap()
            .0;
        let b = t.acquire_task("job".into()).unwrap();
        let c = t
            .acquire_request_in(1, &http::Method::from_bytes(b"PURGE").unwrap(), "/x")
            .unwrap()
            .0;
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
        let d = t.acquire_request_in(0, &GET, "/after-trigger").unwrap().0;
        let late = t
            .snapshot()
            .into_iter()
            .find(|l| matches!(&l.kind, Kind::Request { path, .. } if path == "/after-trigger"))
            .unwrap();
        assert!(late.since.is_some() && !late.lower_bound);
        for x in [a, c, d] {
            t.release_request_in(0, x);
        }
        t.release_task(b);
        assert!(t.snapshot().is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn more_requests_than_slots_are_counted_and_reported_unnamed() {
        let t = Tracker::new(1);
        let tickets: Vec<_> = (0..SLOTS + 10)
            .map(|_| t.acquire_request_in(0, &GET, "/").unwrap().0)
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
            t.release_request_in(0, x);
        }
        assert_eq!(t.in_flight(), 0);
        assert!(t.snapshot().is_empty());
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod loom_tests {
    // A bare tracker has no owner that lets go: `Free` is always `false`.
    #![allow(unused_must_use)]

    use super::*;
    use loom::future::block_on;
    use loom::thread;

    const GET: http::Method = http::Method::GET;

    /// Tickets borrow their tracker, and loom has no scoped threads: each
    /// model execution leaks its (small) tracker.
    fn leak(t: Tracker) -> &'static Tracker {
        Box::leak(Box::new(t))
    }

    /// The last request ends exactly as draining starts: the waiter must wake,
    /// and must not wake before the release.
    #[test]
    fn last_release_races_begin_drain() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let ticket = t.acquire_request_in(1, &GET, "/").unwrap().0;
            let t2 = t;
            let releaser = thread::spawn(move || t2.release_request_in(0, ticket));
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
            let t = leak(Tracker::new(2));
            let a = t.acquire_request_in(0, &GET, "/").unwrap().0;
            let b = t.acquire_request_in(1, &GET, "/").unwrap().0;
            let ta = t;
            let h = thread::spawn(move || {
                ta.release_request_in(1, a);
                ta.release_request_in(0, b);
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
            let t = leak(Tracker::new(2));
            let held = t.acquire_request_in(0, &GET, "/").unwrap().0;
            let t2 = t;
            let h = thread::spawn(move || {
                let late = t2.acquire_request_in(1, &GET, "/").unwrap().0;
                let early = t2.is_drained();
                t2.release_request_in(0, late);
                early
            });
            t.begin_drain();
            assert!(!t.is_drained(), "`held` is still live");
            let drained_while_late_live = h.join().unwrap();
            assert!(!drained_while_late_live, "`held` was live all along");
            t.release_request_in(1, held);
            assert!(t.is_drained());
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// Concurrent begin_drain calls: exactly one performs the switch, the bias
    /// is removed once, and the latch is set exactly when nothing is live.
    #[test]
    fn concurrent_begin_drain() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let a = t.acquire_request_in(1, &GET, "/").unwrap().0;
            let t2 = t;
            let h = thread::spawn(move || t2.begin_drain());
            let mine = t.begin_drain();
            let theirs = h.join().unwrap();
            assert!(mine.is_some() ^ theirs.is_some());
            assert_eq!(mine.or(theirs).map(|(n, _)| n), Some(1));
            assert!(!t.is_drained());
            t.release_request_in(0, a);
            assert!(t.is_drained());
        });
    }

    /// More live requests on a thread than it has slots: the extra one is
    /// counted through the shard counter, while the switch seals both kinds
    /// of counts. Never drained while any is live; drained at the end.
    #[test]
    fn unnamed_overflow_races_switch() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let held = t.acquire_request_in(0, &GET, "/held").unwrap().0;
            let t2 = t;
            let h = thread::spawn(move || {
                let a = t2.acquire_request_in(1, &GET, "/a").unwrap().0;
                let b = t2.acquire_request_in(1, &GET, "/b").unwrap().0;
                let c = t2.acquire_request_in(1, &GET, "/c").unwrap().0; // no free slot
                t2.release_request_in(0, c);
                t2.release_request_in(1, a);
                t2.release_request_in(0, b);
                assert!(!t2.is_drained(), "`held` is live");
            });
            t.begin_drain();
            assert!(!t.is_drained(), "`held` is live");
            h.join().unwrap();
            assert!(!t.is_drained(), "`held` is live");
            assert_eq!(t.in_flight(), 1);
            t.release_request_in(1, held);
            assert!(t.is_drained());
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// A task guard (shard counter) and a request (slot) end on other
    /// threads during the switch.
    #[test]
    fn task_and_request_end_during_switch() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let job = t.acquire_task("job".into()).unwrap();
            let req = t.acquire_request_in(1, &GET, "/").unwrap().0;
            let t2 = t;
            let h = thread::spawn(move || {
                t2.release_task(job);
                t2.release_request_in(0, req);
            });
            assert_eq!(t.begin_drain().map(|(n, _)| n <= 2), Some(true));
            block_on(t.drained());
            h.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// The last request ends while a new one claims a slot after the switch:
    /// the new one is either admitted, and then the drain is not complete
    /// until it ends, or refused; never admitted after `drained()` fired.
    /// A second claim after a refusal is refused too (zero is terminal).
    #[test]
    fn no_request_admitted_after_drained() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let last = t.acquire_request_in(0, &GET, "/last").unwrap().0;
            t.begin_drain();
            let t2 = t;
            let late = thread::spawn(move || match t2.acquire_request_in(1, &GET, "/late") {
                Ok((ticket, admission)) => {
                    assert_eq!(admission, Admission::Draining);
                    assert!(!t2.is_drained(), "admitted, so the drain must wait for it");
                    t2.release_request_in(1, ticket);
                    true
                }
                Err(Refused) => {
                    assert!(t2.is_drained() || t2.global.load(Acquire) == 0);
                    assert!(
                        t2.acquire_request_in(1, &GET, "/later").is_err(),
                        "zero is terminal"
                    );
                    false
                }
            });
            t.release_request_in(0, last);
            block_on(t.drained());
            late.join().unwrap();
            assert_eq!(t.in_flight(), 0);
            assert!(t.is_drained());
        });
    }

    /// Same race for an unnamed claim (shard counter) and a task.
    #[test]
    fn no_task_admitted_after_drained() {
        loom::model(|| {
            let t = leak(Tracker::new(2));
            let last = t.acquire_request_in(0, &GET, "/last").unwrap().0;
            t.begin_drain();
            let t2 = t;
            let late = thread::spawn(move || {
                if let Ok(job) = t2.acquire_task("job".into()) {
                    assert!(!t2.is_drained(), "admitted, so the drain must wait for it");
                    t2.release_task(job);
                }
            });
            t.release_request_in(1, last);
            block_on(t.drained());
            late.join().unwrap();
            assert_eq!(t.in_flight(), 0);
        });
    }

    /// A slot released while a snapshot reads it is either reported whole or
    /// skipped, never reported with a torn name.
    #[test]
    fn snapshot_never_reports_a_torn_slot() {
        loom::model(|| {
            let t = leak(Tracker::new(1));
            let a = t.acquire_request_in(0, &GET, "/a").unwrap().0;
            let t2 = t;
            let h = thread::spawn(move || {
                t2.release_request_in(0, a);
                let b = t2
                    .acquire_request_in(0, &http::Method::PUT, "/b")
                    .unwrap()
                    .0;
                t2.release_request_in(0, b);
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
