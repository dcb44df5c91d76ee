use super::*;
use crate::core::names::PATH_CAP;

const GET: http::Method = http::Method::GET;
/// The slots a claim looks at first from the hint, in the burst test below.
const PROBES: usize = 4;

#[test]
fn drained_only_after_last_release() {
    let t = Tracker::new(4);
    let a = t.acquire_request_in(0, &GET, "/a").unwrap().0;
    let b = t.acquire_request_in(3, &GET, "/b").unwrap().0;
    assert_eq!(t.in_flight(), 2);
    assert_eq!(t.begin_drain(), Some(2));
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
    // The slots from the hint (the last slot, then the first three) are
    // busy; the rest are free: the next request is named.
    let next = t.acquire_request_in(0, &GET, "/after-burst").unwrap().0;
    let named: Vec<String> = t
        .snapshot()
        .into_iter()
        .filter_map(|l| match l.kind {
            LiveKind::Request { path, .. } => Some(path),
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
    t.release(Ticket(0));
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn cross_shard_release_before_drain_cancels_out() {
    let t = Tracker::new(2);
    let a = t.acquire_request_in(0, &GET, "/").unwrap().0;
    t.release_request_in(1, a); // shard 0 = +1, shard 1 = -1
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.begin_drain(), Some(0));
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
            LiveKind::Request { method, path } => format!("{method} {path}"),
            LiveKind::Task { name } => format!("task {name}"),
            LiveKind::Unnamed { count } => format!("{count} unnamed"),
            LiveKind::Connections { count } => format!("{count} connections"),
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
        .filter(|l| matches!(l.kind, LiveKind::Request { .. }))
        .all(|l| l.since.is_none()));
    t.stamp_live();
    let snap = t.snapshot();
    assert!(snap
        .iter()
        .filter(|l| matches!(l.kind, LiveKind::Request { .. }))
        .all(|l| l.since.is_some() && l.lower_bound));
    let d = t.acquire_request_in(0, &GET, "/after-trigger").unwrap().0;
    let late = t
        .snapshot()
        .into_iter()
        .find(|l| matches!(&l.kind, LiveKind::Request { path, .. } if path == "/after-trigger"))
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
            LiveKind::Unnamed { count } => count,
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

/// A hold keeps the drain open without counting as in flight (not in the
/// gauge, not in the count at the switch); its release completes the
/// drain; after that no hold is granted.
#[test]
fn a_hold_keeps_the_drain_open_but_is_not_in_flight() {
    let t = Tracker::new(2);
    let before = t.acquire_hold().expect("granted while serving");
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.begin_drain(), Some(0), "not a request or task");
    assert!(!t.is_drained(), "the hold keeps the drain open");
    let during = t.acquire_hold().expect("granted while draining");
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.holds(), 2);
    t.release_hold(before);
    assert!(!t.is_drained());
    assert!(t
        .snapshot()
        .iter()
        .any(|l| matches!(l.kind, LiveKind::Connections { count: 1 })));
    t.release_hold(during);
    assert!(t.is_drained(), "the last release completes the drain");
    assert!(t.acquire_hold().is_err(), "refused once drained");
    assert_eq!(t.completed_while_draining(), 0);
}
