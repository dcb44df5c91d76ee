use super::*;
use crate::core::names::LiveKind;
use loom::future::block_on;
use loom::thread;

const GET: http::Method = http::Method::GET;

/// Loom has no scoped threads: each model execution leaks its (small)
/// tracker, so that the spawned thread can borrow it for `'static`.
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
        assert_eq!(mine.or(theirs), Some(1));
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
        assert_eq!(t.begin_drain().map(|n| n <= 2), Some(true));
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

/// A hold (an HTTP/2 connection's GOAWAY exchange) taken before the
/// trigger and released while the switch runs: it is in `global` on both
/// sides of the switch, so the drain never completes before both the hold
/// and the request are gone, and the count at drain start leaves the hold
/// out.
#[test]
fn hold_released_during_switch() {
    loom::model(|| {
        let t = leak(Tracker::new(2));
        let hold = t.acquire_hold().unwrap();
        let req = t.acquire_request_in(0, &GET, "/").unwrap().0;
        let t2 = t;
        let h = thread::spawn(move || {
            t2.release_hold(hold);
            t2.release_request_in(1, req);
        });
        let at_drain = t.begin_drain().unwrap();
        assert!(at_drain <= 1, "the hold is not a request: {at_drain}");
        block_on(t.drained());
        h.join().unwrap();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.holds(), 0);
    });
}

/// A hold taken while the last request ends after the switch: admitted,
/// then the drain waits for it; refused only once the drain completed; and
/// the in-flight gauge never counts the hold as a request once it settles.
#[test]
fn no_hold_admitted_after_drained() {
    loom::model(|| {
        let t = leak(Tracker::new(2));
        let last = t.acquire_request_in(0, &GET, "/last").unwrap().0;
        t.begin_drain();
        let t2 = t;
        let late = thread::spawn(move || match t2.acquire_hold() {
            Ok(hold) => {
                assert!(!t2.is_drained(), "admitted, so the drain must wait for it");
                t2.release_hold(hold);
            }
            Err(Refused) => {
                assert!(t2.is_drained() || t2.global.load(Acquire) == 0);
                assert!(t2.acquire_hold().is_err(), "zero is terminal");
            }
        });
        t.release_request_in(1, last);
        block_on(t.drained());
        late.join().unwrap();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.holds(), 0);
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
                LiveKind::Request { method, path } => assert!(
                    (method == "GET" && path == "/a") || (method == "PUT" && path == "/b"),
                    "{method} {path}"
                ),
                other => panic!("{other:?}"),
            }
        }
        h.join().unwrap();
    });
}
