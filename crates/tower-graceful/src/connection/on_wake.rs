//! A future polled again only when its own waker has fired.
//!
//! A connection task races hyper's connection against the drain's end
//! (`drain_over`, and for HTTP/2 the GOAWAY time) in a `select!`, and a
//! `select!` polls every branch on every wake-up of the task: for a
//! keep-alive connection, at least once per request. Polling those futures
//! when nothing has happened to them is not free: each waits on tokio
//! `Notify`s, and `Notified::poll` takes its list's lock to compare the
//! stored waker, for every one of them on every poll (two locks per wake-up
//! for `drain_over`, shared by all the connections). Wrapped in [`OnWake`],
//! such a future is polled with a waker of its own, and a wake-up of the
//! task that did not come through that waker costs one atomic swap.
//!
//! The inner future is polled on the first poll, whenever the task's waker
//! changes (the stored one could no longer wake the right task), and after
//! its own waker fired; nothing else can make it ready.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use pin_project_lite::pin_project;

pin_project! {
    /// `F`, polled only when it may have progressed (see the module docs).
    pub(crate) struct OnWake<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        // `flag` as a waker, made once.
        waker: Waker,
        // The task's waker that `flag` holds, to tell when it changes
        // without taking `flag`'s lock.
        task: Option<Waker>,
    }
}

/// What the inner future's waker sets, and the task it wakes.
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Release, with the Acquire swap in `poll`: set before the task is
        // woken, so the poll that the wake-up causes sees it.
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F> OnWake<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Self {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if !same_task {
            let mut stored = this
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *stored = Some(cx.waker().clone());
            *this.task = Some(cx.waker().clone());
        }
        // Cleared before the inner poll, so a wake-up during or after it is
        // kept for the next poll. Acquire: see `wake_by_ref`.
        let woken = this.flag.woken.swap(false, Ordering::Acquire);
        if same_task && !woken {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls, keeps the last waker it was polled with, and is
    /// ready once `open` is set.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        open: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Probe {
        fn polls(&self) -> usize {
            self.polls.load(Ordering::Relaxed)
        }

        fn open_and_wake(&self) {
            self.open.store(true, Ordering::Release);
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    impl Future for &Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.open.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Task {
        fn woken(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// Polls of the task that its own waker did not cause leave the inner
    /// future alone; its wake-up wakes the task, and the next poll polls it.
    #[test]
    fn polls_the_inner_future_only_after_its_own_wake_up() {
        let probe = Probe::default();
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut gated = std::pin::pin!(OnWake::new(&probe));
        for _ in 0..10 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls(), 1, "polled once, to register");
        probe.open_and_wake();
        assert_eq!(task.woken(), 1, "the inner wake-up wakes the task");
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls(), 2);
    }

    /// A wake-up between two polls of the task is not lost, whichever poll
    /// it falls after.
    #[test]
    fn a_wake_up_is_kept_until_the_next_poll() {
        let probe = Probe::default();
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut gated = std::pin::pin!(OnWake::new(&probe));
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        // Woken without being ready: polled once more, pending again.
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls(), 2);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls(), 2);
        probe.open_and_wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(task.woken(), 2);
    }

    /// A new task waker (the future moved to another task) is stored, and
    /// the inner future is polled at once; the old task is not woken.
    #[test]
    fn a_new_task_waker_polls_again_and_is_the_one_woken() {
        let probe = Probe::default();
        let a = Arc::new(Task::default());
        let b = Arc::new(Task::default());
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut gated = std::pin::pin!(OnWake::new(&probe));
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending());
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending());
        assert_eq!(probe.polls(), 1, "same task, not woken");
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending());
        assert_eq!(probe.polls(), 2, "a new task waker");
        probe.open_and_wake();
        assert_eq!((a.woken(), b.woken()), (0, 1));
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_ready());
    }

    /// Model-based: any sequence of inner wake-ups (with or without the
    /// inner future becoming ready), spurious task wake-ups, polls and
    /// changes of the task's waker. The property: a poll after the inner
    /// future became ready (and woke) returns `Ready`; every inner wake-up
    /// wakes the task that polled last; the inner future is never polled
    /// more often than the model allows (first poll, a new task waker, or
    /// a wake-up since the last inner poll).
    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// The inner future's event: wakes it (ready or not).
            InnerWake { ready: bool },
            /// The task is polled with its current waker.
            Poll,
            /// The task is polled with a new waker (moved, or a new one).
            NewTask,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any::<bool>().prop_map(|ready| Op::InnerWake { ready }),
                Just(Op::Poll),
                Just(Op::NewTask),
            ]
        }

        proptest! {
            #[test]
            fn never_misses_a_wake_up_nor_polls_in_vain(ops in proptest::collection::vec(op(), 1..60)) {
                let probe = Probe::default();
                let mut task = Arc::new(Task::default());
                let mut waker = Waker::from(task.clone());
                let mut gated = std::pin::pin!(OnWake::new(&probe));
                // The model.
                let mut first = true;
                let mut new_task = false;
                let mut woken_since_poll = false;
                let mut ready = false;
                let mut inner_polls = 0usize;
                for op in ops {
                    match op {
                        Op::InnerWake { ready: r } => {
                            let before = task.woken();
                            let registered = probe.waker.lock().unwrap().is_some();
                            if r {
                                ready = true;
                                probe.open_and_wake();
                            } else if let Some(w) = probe.waker.lock().unwrap().take() {
                                w.wake();
                            }
                            if registered {
                                woken_since_poll = true;
                                // Woken through the flag: the last task is.
                                prop_assert_eq!(task.woken(), before + 1);
                            }
                        }
                        Op::Poll | Op::NewTask => {
                            if matches!(op, Op::NewTask) {
                                task = Arc::new(Task::default());
                                waker = Waker::from(task.clone());
                                new_task = true;
                            }
                            let mut cx = Context::from_waker(&waker);
                            let out = gated.as_mut().poll(&mut cx);
                            let expect_inner = first || new_task || woken_since_poll;
                            if expect_inner {
                                inner_polls += 1;
                            }
                            prop_assert_eq!(probe.polls(), inner_polls);
                            // Ready is seen as soon as the inner future
                            // was both ready and polled.
                            if ready && expect_inner {
                                prop_assert!(out.is_ready());
                                return Ok(());
                            }
                            prop_assert!(out.is_pending() || ready);
                            first = false;
                            new_task = false;
                            woken_since_poll = false;
                        }
                    }
                }
            }
        }
    }

    /// Two threads: one wakes the inner future (once, at a random moment),
    /// the other polls whenever its task is woken (and spuriously). The
    /// poller always ends with `Ready`, never waiting for a wake-up that
    /// was lost. Bounded: 2,000 rounds, each waiting at most 5 s.
    #[test]
    fn a_wake_up_from_another_thread_is_never_lost() {
        use std::sync::mpsc;
        for round in 0..2_000u32 {
            let probe = Arc::new(Probe::default());
            let (tx, rx) = mpsc::channel::<()>();
            struct Chan(Mutex<mpsc::Sender<()>>);
            impl Wake for Chan {
                fn wake(self: Arc<Self>) {
                    let _ = self.0.lock().unwrap().send(());
                }
            }
            let waker = Waker::from(Arc::new(Chan(Mutex::new(tx))));
            let mut cx = Context::from_waker(&waker);
            let inner: Pin<Box<dyn Future<Output = ()> + Send>> = {
                let probe = probe.clone();
                // The block owns the `Arc` (a `&Probe` alone would borrow).
                #[allow(clippy::redundant_async_block)]
                Box::pin(async move { (&*probe).await })
            };
            let mut gated = Box::pin(OnWake::new(inner));
            assert!(gated.as_mut().poll(&mut cx).is_pending());
            let waker_thread = {
                let probe = probe.clone();
                std::thread::spawn(move || {
                    for _ in 0..(round % 7) {
                        std::hint::spin_loop();
                    }
                    probe.open_and_wake();
                })
            };
            // Spurious polls race the wake-up.
            let mut done = false;
            for _ in 0..(round % 5) {
                if gated.as_mut().poll(&mut cx).is_ready() {
                    done = true;
                    break;
                }
            }
            while !done {
                rx.recv_timeout(std::time::Duration::from_secs(5))
                    .expect("woken: the wake-up was not lost");
                done = gated.as_mut().poll(&mut cx).is_ready();
            }
            waker_thread.join().unwrap();
        }
    }
}
