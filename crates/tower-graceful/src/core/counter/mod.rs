//! The in-flight counter: how many requests and background tasks are alive,
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
//!
//! The counter owns nothing but its atomics: a [`Ticket`] is an index, and
//! whoever holds one also holds the `Arc` of the state the counter is part of
//! (`core::guard`), so no slot outlives its counter.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::core::event::{Event, Wait};
use crate::core::evidence::Arrivals;
use crate::core::names::{Live, LiveKind, Name, SlotName, BEFORE_TRIGGER};
use crate::core::sync::{fence, lock, AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Mutex};
use crate::core::tasks::{TaskKey, Tasks};
use crate::core::thread_index;

/// A sealed shard counter's value stays near this, far below any real count.
const SEALED_COUNT: isize = isize::MIN / 2;
/// Far above any real count: keeps `global` away from zero during the switch.
const BIAS: isize = isize::MAX / 4;

#[cfg(not(tower_graceful_loom))]
const SLOTS: usize = 64;
#[cfg(tower_graceful_loom)]
const SLOTS: usize = 2;

/// Slot `state` bits: the rest is a generation, bumped by every claim, that
/// lets a reader notice that the slot was reused while it read the name.
const LIVE: u64 = 1;
const SEALED: u64 = 2;
const GEN: u64 = 4;

struct Slot {
    /// `generation * GEN | SEALED? | LIVE?`.
    state: AtomicU64,
    name: SlotName,
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
    slots: [Slot; SLOTS],
}

/// Keeps each shard's header on its own cache line(s).
#[repr(align(128))]
struct Padded<T>(T);

/// A request's hold on the count: the index of the slot that names it, or
/// [`Ticket::UNNAMED`]. Not `Clone`: released exactly once, to the counter
/// that issued it.
#[derive(Debug)]
pub(crate) struct Ticket(u32);

impl Ticket {
    const UNNAMED: u32 = u32::MAX;

    fn named(&self) -> Option<usize> {
        (self.0 != Self::UNNAMED).then_some(self.0 as usize)
    }
}

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

/// A background task's hold on the count.
#[derive(Debug)]
pub(crate) struct TaskTicket(TaskKey);

/// A hold on the drain that is neither a request nor a task (an HTTP/2
/// connection of `serve` whose GOAWAY exchange is not over): counted in
/// `global` only, so it keeps the drain open without showing in the
/// in-flight gauge or the in-flight count at drain start.
#[derive(Debug)]
pub(crate) struct HoldTicket(());

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
    /// Holds alive now ([`HoldTicket`]): a gauge, to keep them out of
    /// [`in_flight`](Self::in_flight) and to name them at a forced stop.
    holds: AtomicIsize,
    epoch: tokio::time::Instant,
    /// Requests admitted after the trigger (the adaptive pre-drain's
    /// evidence when `serve` does not own the connections).
    pub(crate) admitted_after_trigger: Arrivals,
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
                        slots: std::array::from_fn(|_| Slot {
                            state: AtomicU64::new(0),
                            name: SlotName::new(),
                        }),
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
            holds: AtomicIsize::new(0),
            epoch: tokio::time::Instant::now(),
            admitted_after_trigger: Arrivals::new(),
        }
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
        if index < n {
            index
        } else {
            index % n
        }
    }

    #[inline]
    fn slot(&self, index: usize) -> &Slot {
        &self.shards[index / SLOTS].0.slots[index % SLOTS]
    }

    /// `global += delta`; the call that brings it to zero sets the drained
    /// latch.
    fn add_global(&self, delta: isize) {
        if self.global.fetch_add(delta, AcqRel) + delta == 0 {
            self.drained.set();
        }
    }

    /// `global += 1` unless it is zero. Zero is terminal: once the switch is
    /// done and the last entry has ended, the drain is complete and whoever
    /// waits for it (hooks closing pools, the process exiting) may already be
    /// running, so nothing may start again. A plain `fetch_add` would let a
    /// request that read "not drained yet" a moment earlier resurrect the
    /// count after the latch fired (and let a second request slip in while
    /// the first is being turned away); the compare-exchange makes "is it
    /// zero?" and "count me" one step. Only claims after the switch get here.
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

    /// `-1` through `shard`'s counter; returns whether it was sealed (the
    /// caller then ends the entry in `global`).
    fn sub_one(&self, shard: usize) -> bool {
        self.shards[shard].0.count.fetch_add(-1, AcqRel) <= SEALED_COUNT / 2
    }

    // ---- requests ----

    /// Counts a request started on this thread, named in this thread's shard
    /// when the thread has one; refused once the drain has completed.
    #[inline]
    pub(crate) fn acquire(&self, name: Name<'_>) -> Result<(Ticket, Admission), Refused> {
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
    ) -> Result<(Ticket, Admission), Refused> {
        self.acquire_in(shard, Name::of(method, path))
    }

    #[inline]
    fn acquire_in(&self, shard: usize, name: Name<'_>) -> Result<(Ticket, Admission), Refused> {
        let s = &self.shards[shard].0;
        let hint = s.hint.load(Relaxed);
        // From the hint on: with one request at a time per thread, the first
        // slot looked at is free.
        for i in 0..SLOTS {
            let idx = (hint + i) % SLOTS;
            let slot = &s.slots[idx];
            // Acquire: a release on another thread freed it; its reads of the
            // old name happen before the writes below.
            if slot.state.load(Acquire) & LIVE != 0 {
                continue;
            }
            self.write_name(slot, name);
            let admission = self.claim(slot)?;
            if idx != hint {
                // Next time, look here first: with one request at a time per
                // thread it is free again, and its cache line is already here.
                s.hint.store(idx, Relaxed);
            }
            return Ok((Ticket((shard * SLOTS + idx) as u32), admission));
        }
        self.acquire_unnamed(shard)
    }

    /// Writes the name into a free slot of this thread's shard (seqlock-style
    /// for `snapshot`: a reader that saw the previous generation live notices
    /// the change of `state` and drops what it read).
    #[inline]
    fn write_name(&self, slot: &Slot, name: Name<'_>) {
        fence(Release);
        let since = if self.stamping.load(Relaxed) {
            // After the trigger only: the serving path before it pays
            // nothing for the pre-drain's evidence.
            self.admitted_after_trigger.record();
            self.now_stamp()
        } else {
            0
        };
        slot.name.write(name, since);
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
        // Sealed while free: the switch did not count this slot, so the
        // request counts itself in `global` (before it can end: that is after
        // we return), or gives the slot back if the drain already completed.
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

    fn acquire_unnamed(&self, shard: usize) -> Result<(Ticket, Admission), Refused> {
        let admission = self.add_one(shard)?;
        self.shards[shard].0.unnamed.fetch_add(1, Relaxed);
        Ok((Ticket(Ticket::UNNAMED), admission))
    }

    /// Frees the ticket's slot (or its unnamed count), releasing on this
    /// thread's shard. Returns whether draining had begun: the request's
    /// `+1` is then in `global`, and the caller ends it there
    /// ([`end_while_draining`](Self::end_while_draining) or
    /// [`end_turned_away`](Self::end_turned_away)). Before draining it is a
    /// plain release, the same read-modify-write whose previous value says
    /// "sealed".
    #[inline]
    pub(crate) fn release_slot(&self, ticket: Ticket) -> bool {
        match ticket.named() {
            Some(index) => self.release_named(index),
            // Only an unnamed count needs this thread's shard.
            None => self.release_unnamed(self.home()),
        }
    }

    #[cfg(test)]
    fn release_slot_in(&self, shard: usize, ticket: Ticket) -> bool {
        match ticket.named() {
            Some(index) => self.release_named(index),
            None => self.release_unnamed(shard),
        }
    }

    #[inline]
    fn release_named(&self, index: usize) -> bool {
        // `fetch_sub` clears the set `LIVE` bit like `fetch_and` would, but is
        // one `lock xadd` on x86 where `fetch_and` is a compare-exchange
        // loop.
        let prev = self.slot(index).state.fetch_sub(LIVE, AcqRel);
        debug_assert!(prev & LIVE != 0, "slot released twice");
        prev & SEALED != 0
    }

    fn release_unnamed(&self, shard: usize) -> bool {
        self.shards[shard].0.unnamed.fetch_sub(1, Relaxed);
        self.sub_one(shard)
    }

    /// The request's -1: it completed.
    #[inline]
    pub(crate) fn release(&self, ticket: Ticket) {
        if self.release_slot(ticket) {
            self.end_while_draining();
        }
    }

    /// [`release`](Self::release), with `shard` standing for the releasing
    /// thread's shard (tests and loom models).
    #[cfg(test)]
    pub(crate) fn release_request_in(&self, shard: usize, ticket: Ticket) {
        if self.release_slot_in(shard, ticket) {
            self.end_while_draining();
        }
    }

    /// Ends, in the exact counter, a request that completed while draining.
    pub(crate) fn end_while_draining(&self) {
        // Counted before the decrement that may reach zero: the report is
        // written as soon as the latch is set.
        self.completed_while_draining.fetch_add(1, Relaxed);
        self.add_global(-1);
    }

    /// Ends, in the exact counter, a request turned away right after it was
    /// counted (not a completion).
    pub(crate) fn end_turned_away(&self) {
        self.add_global(-1);
    }

    /// Counts a request admitted while draining and served.
    pub(crate) fn count_served_while_draining(&self) {
        self.admitted_while_draining.fetch_add(1, Relaxed);
    }

    /// Requests admitted after draining began and served.
    pub(crate) fn admitted_while_draining(&self) -> usize {
        self.admitted_while_draining.load(Relaxed)
    }

    // ---- rejections and closes ----

    /// Counts a draining rejection on this thread's shard.
    pub(crate) fn count_rejected(&self) {
        self.shards[self.home()].0.rejected.fetch_add(1, Relaxed);
    }

    /// Draining rejections so far (a sum over the shards).
    pub(crate) fn rejected(&self) -> usize {
        self.shards.iter().map(|s| s.0.rejected.load(Relaxed)).sum()
    }

    /// Counts a response that announced `Connection: close`.
    pub(crate) fn count_close(&self) {
        self.shards[self.home()].0.closes.fetch_add(1, Relaxed);
    }

    /// Responses that announced `Connection: close` so far.
    pub(crate) fn closes(&self) -> usize {
        self.shards.iter().map(|s| s.0.closes.load(Relaxed)).sum()
    }

    // ---- holds ----

    /// Takes a hold on the drain ([`HoldTicket`]), refused once the drain
    /// has completed. Straight in `global`, before and after the switch:
    /// before it, `global` is `BIAS` plus the holds, so the switch's
    /// `sum - BIAS` leaves it at requests + tasks + holds, and it reaches
    /// zero only when every hold is released too. One shared
    /// read-modify-write per hold: taken once per connection, not per
    /// request.
    pub(crate) fn acquire_hold(&self) -> Result<HoldTicket, Refused> {
        self.try_add_global()?;
        // Relaxed: a gauge; `global` is what decides.
        self.holds.fetch_add(1, Relaxed);
        Ok(HoldTicket(()))
    }

    /// Releases a hold; the release that brings `global` to zero completes
    /// the drain.
    pub(crate) fn release_hold(&self, ticket: HoldTicket) {
        let HoldTicket(()) = ticket;
        self.holds.fetch_sub(1, Relaxed);
        self.add_global(-1);
    }

    /// Holds alive now (a gauge).
    pub(crate) fn holds(&self) -> usize {
        self.holds.load(Relaxed).max(0) as usize
    }

    // ---- tasks ----

    /// Counts a background task, or refuses it once the drain has completed
    /// (nobody waits for it any more).
    pub(crate) fn acquire_task(&self, name: Cow<'static, str>) -> Result<TaskTicket, Refused> {
        self.add_one(self.home())?;
        Ok(TaskTicket(lock(&self.tasks).insert(name)))
    }

    pub(crate) fn release_task(&self, ticket: TaskTicket) {
        lock(&self.tasks).remove(ticket.0);
        if self.sub_one(self.home()) {
            self.add_global(-1);
        }
    }

    /// Tracked tasks alive now (takes the tasks' lock: for gauges only).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn tasks_in_flight(&self) -> usize {
        lock(&self.tasks).len()
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
                    let _ = slot.name.since.compare_exchange(0, stamp, Relaxed, Relaxed);
                }
            }
        }
    }

    /// Switches to exact counting. Idempotent: returns the number of entries
    /// in flight at the switch for the call that did it, `None` after.
    pub(crate) fn begin_drain(&self) -> Option<usize> {
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

    /// Entries in flight now: exact once draining has switched, and before
    /// that exact when nothing moves (a gauge otherwise). Before the switch it
    /// reads every slot (`shards × SLOTS` loads): fine for metrics, not for a
    /// per-request path. Holds are subtracted through their own gauge,
    /// read apart from `global`: while a hold is being taken or released
    /// the result may be one off for that moment (nothing decides on it;
    /// the drain's completion is `global` alone).
    pub(crate) fn in_flight(&self) -> usize {
        let g = self.global.load(Acquire);
        // Holds are in `global` but are neither requests nor tasks.
        let holds = self.holds.load(Relaxed);
        if g < BIAS / 2 {
            return (g - holds).max(0) as usize; // switched: exact
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
            n += g - BIAS - holds;
        }
        n.max(0) as usize
    }

    /// Requests (not tasks) that finished after draining began.
    pub(crate) fn completed_while_draining(&self) -> usize {
        self.completed_while_draining.load(Relaxed)
    }

    /// What is alive now, oldest first (requests started before the trigger
    /// first, without exact times).
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
                let (method, path, mut since) = slot.name.read();
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
                out.push(Live {
                    kind: LiveKind::Request { method, path },
                    since: (since != 0).then(|| {
                        self.epoch + std::time::Duration::from_nanos((since & !BEFORE_TRIGGER) - 1)
                    }),
                    lower_bound: since & BEFORE_TRIGGER != 0,
                });
            }
        }
        for (name, since) in lock(&self.tasks).live() {
            out.push(Live {
                kind: LiveKind::Task { name: name.clone() },
                since: Some(*since),
                lower_bound: false,
            });
        }
        out.sort_by_key(|l| l.since);
        if unnamed > 0 {
            out.push(Live {
                kind: LiveKind::Unnamed {
                    count: unnamed as usize,
                },
                since: None,
                lower_bound: true,
            });
        }
        let holds = self.holds();
        if holds > 0 {
            out.push(Live {
                kind: LiveKind::Connections { count: holds },
                since: None,
                lower_bound: true,
            });
        }
        out
    }
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests;

#[cfg(all(test, tower_graceful_loom))]
mod loom_models;
