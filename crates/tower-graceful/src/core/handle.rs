//! How everything reaches a coordinator's shared state, and when it is
//! freed: the one module of the crate with `unsafe` code.
//!
//! Every request goes through the shared state, and hyper, axum and tonic
//! clone the service stack for every request, so a plain `Arc` here would
//! put two read-modify-writes on one cache line that every core writes into
//! every request. Instead the state has two owners, each counted without a
//! shared line while serving, and is freed when both have let go:
//!
//! * **references** ([`Handle`]): coordinator handles, layers, services and
//!   their per-request clones, signals, readiness gates. A clone or drop is
//!   one uncontended read-modify-write on the thread's own shard of the
//!   tracker. When the last coordinator handle is dropped
//!   ([`Handle::seal`]) the shards are sealed, like the request counter at
//!   drain start, and the count becomes exact: the drop that ends the last
//!   reference knows it.
//! * **the request counter**: requests, held by [`RequestGuard`]s in
//!   response futures and bodies, and background tasks. It reaches zero for
//!   good once draining began (or, if nothing drained, once the references
//!   are gone and it is switched to exact counting) and the last request
//!   ended.
//!
//! Guards do not hold a reference (that would be the shared line again):
//! they hold a [`SharedPtr`], valid because the counter they are part of
//! keeps the state alive. So a future or body whose guard was released must
//! not touch the state any more; the types that carry one say so.
//!
//! [`RequestGuard`]: crate::core::tracker::RequestGuard

#![allow(unsafe_code)]

use std::fmt;
use std::ptr::NonNull;

use crate::core::state::Shared;
use crate::core::tracker::Free;

/// A pointer to the shared state that does not keep it alive on its own:
/// valid while a [`Handle`], a counted request or a counted task of the same
/// state exists (the holder's own, or one it is known to be outlived by).
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr(NonNull<Shared>);

// SAFETY: `Shared` is `Send + Sync` (atomics, mutexes, tokens); the pointer
// is only dereferenced under the validity rule above.
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    /// Frees the state. Called once, by whoever got `Free(true)`.
    ///
    /// # Safety
    ///
    /// Both owners have let go (`Free(true)`), so nothing else can reach the
    /// state, and the caller touches it no more.
    unsafe fn free(self) {
        // SAFETY: the pointer came from `Box::into_raw` in `Handle::new`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }

    /// Frees the state if `free` says so.
    #[inline]
    pub(crate) fn free_if(self, free: Free) {
        if free.0 {
            // SAFETY: `Free(true)` is given to exactly one caller, after both
            // owners let go, as its last access to the state.
            unsafe { self.free() }
        }
    }
}

impl std::ops::Deref for SharedPtr {
    type Target = Shared;

    #[inline(always)]
    fn deref(&self) -> &Shared {
        // SAFETY: the validity rule of the type: the state outlives this use.
        unsafe { self.0.as_ref() }
    }
}

impl fmt::Debug for SharedPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedPtr")
    }
}

/// A counted reference to the shared state: the state lives at least as long
/// as any handle. Clone and drop cost one uncontended read-modify-write on
/// the thread's shard (before the seal).
pub(crate) struct Handle(SharedPtr);

impl Handle {
    /// Allocates `shared` with this one reference. `sealed`: count
    /// references exactly from the start (for state that no coordinator
    /// owns, such as a signal made from a bare token: nothing would seal it).
    pub(crate) fn new(shared: Shared, sealed: bool) -> Self {
        let ptr = SharedPtr(NonNull::from(Box::leak(Box::new(shared))));
        ptr.tracker.ref_acquire();
        let handle = Self(ptr);
        if sealed {
            // Not zero: this handle's reference is in the sum.
            let none_left = handle.tracker.seal_refs();
            debug_assert!(!none_left);
        }
        handle
    }

    /// The last coordinator handle is gone: count references exactly from
    /// now on (idempotent). Call before dropping that handle's own reference.
    pub(crate) fn seal(&self) {
        let none_left = self.tracker.seal_refs();
        // This handle is a reference, so some are left.
        debug_assert!(!none_left);
    }

    /// The pointer, for guards and for what a counted request carries.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> SharedPtr {
        self.0
    }

    /// A new reference from a pointer that is valid now (see [`SharedPtr`]).
    #[inline]
    pub(crate) fn from_ptr(ptr: SharedPtr) -> Self {
        ptr.tracker.ref_acquire();
        Self(ptr)
    }
}

impl Clone for Handle {
    #[inline]
    fn clone(&self) -> Self {
        Self::from_ptr(self.0)
    }
}

impl Drop for Handle {
    #[inline]
    fn drop(&mut self) {
        release(self.0);
    }
}

/// Ends one reference to the state behind `ptr` (a [`Handle`]'s or a
/// [`Counted`]'s); the last one, after the seal, orphans it.
#[inline]
fn release(ptr: SharedPtr) {
    if ptr.tracker.ref_release() {
        orphaned(ptr);
    }
}

#[cold]
#[inline(never)]
fn orphaned(ptr: SharedPtr) {
    // Nothing can trigger or watch this coordinator any more: its own
    // tasks end (the last of them, or this, frees the state).
    ptr.abandoned.set();
    let free = ptr.tracker.orphaned();
    ptr.free_if(free);
}

/// How the coordinator's own tasks (the driver, the OS-signal listener) hold
/// the state: not a reference, so they do not keep the coordinator wanted
/// (they end once no reference is left, see `Shared::abandoned`), but the
/// state is not freed before the last of them is dropped.
pub(crate) struct Internal(SharedPtr);

impl Internal {
    /// From a reference (which keeps the state alive meanwhile).
    pub(crate) fn new(handle: &Handle) -> Self {
        handle.tracker.internal_started();
        Self(handle.ptr())
    }

    /// A counted reference, for what the task hands out (signals, layers).
    pub(crate) fn handle(&self) -> Handle {
        Handle::from_ptr(self.0)
    }
}

impl Clone for Internal {
    fn clone(&self) -> Self {
        // This one keeps the state alive meanwhile.
        self.0.tracker.internal_started();
        Self(self.0)
    }
}

impl Drop for Internal {
    fn drop(&mut self) {
        let ptr = self.0;
        ptr.free_if(ptr.tracker.internal_ended());
    }
}

impl std::ops::Deref for Internal {
    type Target = Shared;

    #[inline(always)]
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::Deref for Handle {
    type Target = Shared;

    #[inline(always)]
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

/// A value kept by a state (see [`Kept`]) that knows its state: what
/// [`Counted`] needs to count references to that state through one pointer.
pub(crate) trait InState {
    /// The state's handle, borrowed (see [`Handle::uncounted`]).
    fn handle(&self) -> &Handle;
}

/// A counted reference to a state through a value it keeps: one pointer,
/// so a service holding it is its inner service plus one word, as cheap to
/// move and clone as the `&'static` it replaced (measured: a second word in
/// the fused service made the per-request clone a `memcpy` call).
pub(crate) struct Counted<T: InState>(Kept<T>);

impl<T: InState> Counted<T> {
    /// A new reference; `kept`'s state must be alive (the caller holds a
    /// reference to it).
    pub(crate) fn new(kept: Kept<T>) -> Self {
        kept.handle().tracker.ref_acquire();
        Self(kept)
    }

    /// The kept value, for a pointer that lives no longer than this.
    pub(crate) fn kept(&self) -> Kept<T> {
        self.0
    }
}

impl<T: InState> Clone for Counted<T> {
    #[inline]
    fn clone(&self) -> Self {
        self.0.handle().tracker.ref_acquire();
        Self(self.0)
    }
}

impl<T: InState> Drop for Counted<T> {
    #[inline]
    fn drop(&mut self) {
        release(self.0.handle().ptr());
    }
}

impl<T: InState> std::ops::Deref for Counted<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: InState + fmt::Debug> fmt::Debug for Counted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl Handle {
    /// A handle that does not count, to be borrowed only: what a value kept
    /// by the state holds to reach it (counting would keep the state alive
    /// forever). Never dropped, so never released.
    pub(crate) fn uncounted(ptr: SharedPtr) -> std::mem::ManuallyDrop<Handle> {
        std::mem::ManuallyDrop::new(Handle(ptr))
    }
}

/// A value the shared state keeps until it is freed (configured layers'
/// settings), reached by a plain pointer: valid under the same rule as
/// [`SharedPtr`], for the state that keeps it.
pub(crate) struct Kept<T>(NonNull<T>);

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Kept<T> {}

// SAFETY: shared references to `T` cross threads: `T: Sync` is required;
// the value is never moved or mutated after it is kept.
unsafe impl<T: Sync> Send for Kept<T> {}
unsafe impl<T: Sync> Sync for Kept<T> {}

impl<T> Kept<T> {
    /// # Safety
    ///
    /// `value` must stay at its address, unchanged, for as long as the state
    /// that keeps it (it is boxed in the state's arena).
    pub(crate) unsafe fn new(value: &T) -> Self {
        Self(NonNull::from(value))
    }
}

impl<T> Kept<T> {
    /// A pointer to a part of the kept value.
    #[inline]
    pub(crate) fn field<U>(self, f: impl FnOnce(&T) -> &U) -> Kept<U> {
        Kept(NonNull::from(f(&self)))
    }

    /// A pointer to a part of the shared state itself (a tracker slot):
    /// valid for as long as the state, by construction.
    #[inline(always)]
    pub(crate) fn part_of_state(value: &T) -> Self {
        Self(NonNull::from(value))
    }
}

impl<T> std::ops::Deref for Kept<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the holder holds a `Handle` or a counted request of the
        // state that keeps the value.
        unsafe { self.0.as_ref() }
    }
}

impl<T: fmt::Debug> fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl Shared {
    /// Keeps `value` until the state is freed, and returns a pointer to it.
    pub(crate) fn keep<T: Send + Sync + 'static>(&self, value: T) -> Kept<T> {
        let boxed = Box::new(value);
        // SAFETY: the box is moved into the arena below and never dropped,
        // moved out or mutated before the state is.
        let kept = unsafe { Kept::new(&*boxed) };
        crate::core::sync::lock(&self.arena).push(boxed);
        kept
    }
}

/// [`Event::wait`](crate::core::event::Event::wait) for the drained latch,
/// holding a reference to the state: `'static`, for public futures.
pub(crate) struct OwnedWait {
    shared: Handle,
    slot: Option<usize>,
}

impl OwnedWait {
    /// Completes when the drain completed (the counter reached zero).
    pub(crate) fn drained(shared: Handle) -> Self {
        Self { shared, slot: None }
    }
}

impl std::future::Future for OwnedWait {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        let r = this
            .shared
            .tracker
            .drained_event()
            .poll_wait(&mut this.slot, cx);
        if r.is_ready() {
            this.slot = None;
        }
        r
    }
}

impl Drop for OwnedWait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.tracker.drained_event().cancel_wait(slot);
        }
    }
}

impl fmt::Debug for OwnedWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedWait").finish_non_exhaustive()
    }
}

/// Counts its drops: kept in a state's arena, it tells when the state was
/// freed (and that it was freed once).
#[cfg(test)]
pub(crate) struct Sentinel(pub(crate) std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[cfg(test)]
impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Sentinel {
    /// Keeps a sentinel in `shared`; the counter reads 1 once it is freed.
    pub(crate) fn watch(shared: &Shared) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let freed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let _ = shared.keep(Sentinel(freed.clone()));
        freed
    }
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    //! The state is freed exactly when the last reference, request and task
    //! are gone, whatever order they go in.

    use std::convert::Infallible;
    use std::sync::atomic::Ordering::SeqCst;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::Coordinator;

    fn app() -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    }

    fn req() -> Request<Full<Bytes>> {
        Request::new(Full::new(Bytes::new()))
    }

    fn build() -> Coordinator {
        Coordinator::builder()
            .handle_signals(false)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_coordinator_built_and_dropped_is_freed() {
        let c = build();
        let freed = Sentinel::watch(&c.shared);
        drop(c);
        // The driver task holds the state until it sees the abandonment.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(freed.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn freed_after_the_last_body_not_before() {
        let c = build();
        let freed = Sentinel::watch(&c.shared);
        let svc = c.layer().layer(app());
        let res = svc.clone().oneshot(req()).await.unwrap();
        let layer = c.layer().exempt("/metrics");
        drop((c, svc, layer));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(freed.load(SeqCst), 0, "the body still counts its request");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(freed.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn freed_after_a_full_shutdown_when_everything_is_dropped() {
        let c = build();
        let freed = Sentinel::watch(&c.shared);
        let signal = c.signal();
        let task = c.track("job");
        let svc = c.layer().layer(app());
        let _ = svc.clone().oneshot(req()).await.unwrap();
        c.trigger();
        drop(task);
        let report = c.wait().await;
        assert_eq!(report.in_flight_at_drain, 0);
        drop((c, svc));
        tokio::task::yield_now().await;
        assert_eq!(freed.load(SeqCst), 0, "the signal is a reference");
        drop(signal);
        assert_eq!(freed.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_signal_from_a_token_is_freed_with_its_last_clone() {
        let signal = crate::ShutdownSignal::from(tokio_util::sync::CancellationToken::new());
        let freed = Sentinel::watch(&signal.shared);
        let other = signal.clone();
        let guard = other.track("work");
        drop((signal, other));
        assert_eq!(freed.load(SeqCst), 0, "the task guard holds it");
        drop(guard);
        assert_eq!(freed.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_process_lifetime_state_is_kept_and_still_counts_requests() {
        let c = Coordinator::builder()
            .handle_signals(false)
            .process_lifetime(true)
            .build()
            .unwrap();
        let freed = Sentinel::watch(&c.shared);
        let svc = c.layer().layer(app());
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(c.in_flight(), 1, "the body counts its request");
        res.into_body().collect().await.unwrap();
        assert_eq!(c.in_flight(), 0);
        drop((c, svc));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(freed.load(SeqCst), 0, "kept for the process, as asked");
    }

    #[test]
    fn service_clones_dropped_on_other_threads_free_once() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let freed = rt.block_on(async {
            let c = build();
            let freed = Sentinel::watch(&c.shared);
            let svc = c.layer().layer(app());
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let svc = svc.clone();
                tasks.push(tokio::spawn(async move {
                    let res = svc.clone().oneshot(req()).await.unwrap();
                    drop(svc);
                    res.into_body().collect().await.unwrap();
                }));
            }
            drop((c, svc));
            for t in tasks {
                t.await.unwrap();
            }
            freed
        });
        drop(rt);
        assert_eq!(freed.load(SeqCst), 1);
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod loom_tests {
    //! The free protocol: the last reference and the last request race, in
    //! every order; the state is freed exactly once, after both.

    use std::sync::atomic::Ordering::SeqCst;

    use loom::thread;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::core::tracker::{Name, RequestGuard};

    fn state() -> (Handle, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let handle = Handle::new(Shared::new(CancellationToken::new(), true), false);
        let freed = Sentinel::watch(&handle);
        (handle, freed)
    }

    /// The last handle is dropped on one thread while the last request ends
    /// on another.
    #[test]
    fn last_reference_races_last_request() {
        loom::model(|| {
            let (handle, freed) = state();
            let (guard, _) = RequestGuard::new(handle.ptr(), Name::of(&http::Method::GET, "/"))
                .expect("counted");
            handle.seal();
            let t = thread::spawn(move || drop(guard));
            drop(handle);
            t.join().unwrap();
            assert_eq!(freed.load(SeqCst), 1);
        });
    }

    /// A clone made and dropped on another thread races the seal and the
    /// drop of the original.
    #[test]
    fn clone_on_another_thread_races_the_seal() {
        loom::model(|| {
            let (handle, freed) = state();
            let other = handle.clone();
            let t = thread::spawn(move || {
                let again = other.clone();
                drop(other);
                drop(again);
            });
            handle.seal();
            drop(handle);
            t.join().unwrap();
            assert_eq!(freed.load(SeqCst), 1);
        });
    }

    /// One of the coordinator's own tasks ends as the last reference goes
    /// (the task holds no reference, but the state must outlive it).
    #[test]
    fn internal_task_ends_as_the_last_reference_goes() {
        loom::model(|| {
            let (handle, freed) = state();
            let internal = Internal::new(&handle);
            handle.seal();
            let t = thread::spawn(move || drop(internal));
            drop(handle);
            t.join().unwrap();
            assert_eq!(freed.load(SeqCst), 1);
        });
    }

    /// The drain completes (the last request ends while draining) as the
    /// last reference goes.
    #[test]
    fn drain_completion_races_last_reference() {
        loom::model(|| {
            let (handle, freed) = state();
            let (guard, _) = RequestGuard::new(handle.ptr(), Name::of(&http::Method::GET, "/"))
                .expect("counted");
            let _ = handle.tracker.begin_drain();
            handle.seal();
            let t = thread::spawn(move || drop(guard));
            drop(handle);
            t.join().unwrap();
            assert_eq!(freed.load(SeqCst), 1);
        });
    }
}
