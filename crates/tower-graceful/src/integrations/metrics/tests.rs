use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tower::{service_fn, ServiceBuilder, ServiceExt};

use super::*;

const TICK: Duration = Duration::from_secs(1);

/// Metric name and its labels (sorted, as `k=v`) → value.
type Values = BTreeMap<(String, Vec<String>), DebugValue>;

/// What was recorded since the last call. The debugging recorder resets
/// counters, gauges and histograms when read, so read right after an
/// emission.
fn read(s: &Snapshotter) -> Values {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _unit, _desc, v)| {
            let (_kind, key) = ck.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), v)
        })
        .collect()
}

fn value<'a>(v: &'a Values, name: &str, labels: &[&str]) -> &'a DebugValue {
    let mut want: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    want.push("server=api".to_owned());
    want.sort();
    v.get(&(name.to_owned(), want.clone()))
        .unwrap_or_else(|| panic!("{name}{want:?} not recorded; got {v:#?}"))
}

fn gauge(v: &Values, name: &str, labels: &[&str]) -> f64 {
    match value(v, name, labels) {
        DebugValue::Gauge(g) => g.0,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(v: &Values, name: &str, labels: &[&str]) -> u64 {
    match value(v, name, labels) {
        DebugValue::Counter(c) => *c,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn histogram(v: &Values, name: &str, labels: &[&str]) -> Vec<f64> {
    match value(v, name, labels) {
        DebugValue::Histogram(h) => h.iter().map(|x| x.0).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn current_phase(v: &Values) -> &'static str {
    let on: Vec<&'static str> = PHASES
        .iter()
        .map(|p| p.as_str())
        .filter(|p| gauge(v, PHASE, &[&format!("phase={p}")]) == 1.0)
        .collect();
    assert_eq!(on.len(), 1, "exactly one phase is 1: {on:?}");
    on[0]
}

/// Lets every task run: on the paused clock, time advances only once
/// all tasks are idle, so after this the emitter has handled whatever
/// event came before, and less than one interval has passed.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn emitter(c: &Coordinator) -> (Emitter, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let e = Emitter::new(c)
        .label("server", "api")
        .interval(TICK)
        .recorder(recorder);
    (e, snap)
}

/// One request through `c.layer()`; its response body stays in flight
/// until the response is dropped.
async fn request(c: &Coordinator) -> Response<impl http_body::Body> {
    ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"body"))))
        }))
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn values_follow_a_shutdown_from_serving_to_done() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(5))
        .drain_deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    let (hook_started_tx, hook_started) = tokio::sync::oneshot::channel::<()>();
    let (release_hook, released) = tokio::sync::oneshot::channel::<()>();
    c.on_shutdown("flush", move || async move {
        let _ = hook_started_tx.send(());
        let _ = released.await;
        Err::<(), _>("disk full")
    })
    .unwrap();
    let (e, snap) = emitter(&c);
    let task = e.clone().spawn();

    // The first emission is at once, before any tick.
    settle().await;
    let v = read(&snap);
    assert_eq!(gauge(&v, ACTIVE_REQUESTS, &[]), 0.0);
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 0.0);
    assert_eq!(gauge(&v, READY, &[]), 1.0);
    assert_eq!(current_phase(&v), "serving");
    assert_eq!(counter(&v, REQUESTS_REJECTED, &[]), 0);

    // The next tick sees a request and a task, each in its own gauge.
    let held = request(&c).await;
    let job = c.track("job");
    tokio::time::sleep(TICK).await;
    let v = read(&snap);
    assert_eq!(
        gauge(&v, ACTIVE_REQUESTS, &[]),
        1.0,
        "a task is not a request"
    );
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 1.0);

    // The trigger is recorded when it happens, not at the next tick.
    c.trigger();
    settle().await;
    let v = read(&snap);
    assert_eq!(gauge(&v, READY, &[]), 0.0);
    assert_eq!(current_phase(&v), "triggered");

    // Draining, also at once. A new request on an open connection is
    // still served (and counted as such).
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    let late = request(&c).await;
    assert_eq!(late.status(), StatusCode::OK);
    drop(late);
    e.record_now();
    let v = read(&snap);
    assert_eq!(current_phase(&v), "draining");
    assert_eq!(counter(&v, REQUESTS_SERVED_WHILE_DRAINING, &[]), 1);
    assert_eq!(counter(&v, REQUESTS_REJECTED, &[]), 0);
    assert_eq!(gauge(&v, ACTIVE_REQUESTS, &[]), 1.0);
    assert!(counter(&v, CONNECTIONS_TOLD_TO_CLOSE, &[]) >= 1, "{v:#?}");

    // The held request ends; the task still holds the drain.
    drop(held);
    tokio::time::sleep(TICK).await;
    let v = read(&snap);
    assert_eq!(gauge(&v, ACTIVE_REQUESTS, &[]), 0.0);
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 1.0);
    assert_eq!(counter(&v, REQUESTS_COMPLETED_WHILE_DRAINING, &[]), 2);
    assert!(c.report().is_none());

    // The task ends: drained, the hook runs (and waits for the test); a
    // request now is turned away.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(job);
    hook_started.await.expect("the hook runs");
    let rejected = request(&c).await;
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(rejected);
    e.record_now();
    let v = read(&snap);
    assert_eq!(current_phase(&v), "cleaning-up");
    assert_eq!(counter(&v, REQUESTS_REJECTED, &[]), 1);
    let _ = release_hook.send(());

    let report = c.wait().await;
    tokio::time::timeout(TICK, task)
        .await
        .expect("run returns once the report is out")
        .unwrap();
    let v = read(&snap);
    assert_eq!(current_phase(&v), "done");
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 0.0);
    assert_eq!(counter(&v, SHUTDOWNS, &["cause=api", "outcome=drained"]), 1);
    assert_eq!(counter(&v, PRE_DRAINS, &["ended_by=fixed"]), 1);
    assert_eq!(counter(&v, HOOKS, &["hook=flush", "outcome=failed"]), 1);
    assert_eq!(counter(&v, ABANDONED, &["kind=request"]), 0);
    assert_eq!(counter(&v, ABANDONED, &["kind=task"]), 0);
    assert_eq!(counter(&v, REQUESTS_REJECTED, &[]), 1);
    assert_eq!(counter(&v, REQUESTS_COMPLETED_WHILE_DRAINING, &[]), 2);
    assert_eq!(counter(&v, REQUESTS_SERVED_WHILE_DRAINING, &[]), 1);
    assert_eq!(
        counter(&v, CONNECTIONS_TOLD_TO_CLOSE, &[]),
        report.connections_told_to_close as u64
    );
    assert_eq!(report.connections_closed_idle, None, "no serve here");
    assert_eq!(
        histogram(&v, PHASE_DURATION, &["phase=triggered"]),
        [report.pre_drain.as_secs_f64()]
    );
    assert_eq!(report.pre_drain, Duration::from_secs(5), "{report}");
    assert_eq!(
        histogram(&v, PHASE_DURATION, &["phase=draining"]),
        [report.drain.as_secs_f64()]
    );
    assert!(report.drain >= Duration::from_secs(3), "{report}");
    assert_eq!(
        histogram(&v, PHASE_DURATION, &["phase=cleaning-up"]),
        [report.cleanup.as_secs_f64()]
    );
    assert_eq!(
        histogram(&v, SHUTDOWN_DURATION, &[]),
        [report.total.as_secs_f64()]
    );
    assert_eq!(histogram(&v, HOOK_DURATION, &["hook=flush"]).len(), 1);

    // Recording again (a clone, a scrape) never counts the shutdown twice.
    e.record_now();
    e.clone().record_now();
    let v = read(&snap);
    assert_eq!(
        counter(&v, SHUTDOWNS, &["cause=api", "outcome=drained"]),
        0,
        "no increment since the last read"
    );
    assert!(histogram(&v, SHUTDOWN_DURATION, &[]).is_empty());
    assert_eq!(current_phase(&v), "done");
}

#[tokio::test(start_paused = true)]
async fn deadline_counts_abandoned_requests_and_tasks() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    let (e, snap) = emitter(&c);
    let task = e.spawn();
    let _held = request(&c).await;
    let _job = c.track("never ends");
    c.trigger();
    let report = c.wait().await;
    tokio::time::timeout(TICK, task).await.unwrap().unwrap();
    assert_eq!(report.drain_outcome, DrainOutcome::DeadlineExceeded);
    let v = read(&snap);
    assert_eq!(counter(&v, ABANDONED, &["kind=request"]), 1);
    assert_eq!(counter(&v, ABANDONED, &["kind=task"]), 1);
    assert_eq!(
        counter(&v, SHUTDOWNS, &["cause=api", "outcome=deadline_exceeded"]),
        1
    );
    assert_eq!(
        histogram(&v, PHASE_DURATION, &["phase=draining"]),
        [3.0],
        "the drain used its whole allowance"
    );
    // The stragglers are still there: the gauges say so.
    assert_eq!(gauge(&v, ACTIVE_REQUESTS, &[]), 1.0);
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn emits_every_interval_while_serving() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let (e, snap) = emitter(&c);
    let _task = e.spawn();
    settle().await;
    let v = read(&snap);
    assert_eq!(gauge(&v, READY, &[]), 1.0);
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 0.0);
    // Nothing moves the phase, so nothing is recorded until the tick
    // (a read resets the debugging recorder's values to 0)...
    let _job = c.track("job");
    let _gate = c.readiness().gate("warmup");
    tokio::time::sleep(TICK / 2).await;
    assert_eq!(gauge(&read(&snap), ACTIVE_TASKS, &[]), 0.0);
    // ...which records the task and the closed readiness gate.
    tokio::time::sleep(TICK / 2).await;
    settle().await;
    let v = read(&snap);
    assert_eq!(gauge(&v, ACTIVE_TASKS, &[]), 1.0);
    assert_eq!(gauge(&v, READY, &[]), 0.0);
    assert_eq!(c.phase(), Phase::Serving);
}

#[tokio::test]
async fn emitter_and_its_run_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let e = Emitter::new(&c);
    send_sync(&e);
    send(&e.run());
}

#[tokio::test]
#[should_panic(expected = "more than zero")]
async fn zero_interval_is_refused() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let _ = Emitter::new(&c).interval(Duration::ZERO);
}

#[tokio::test]
async fn unit_and_kind_of_each_metric() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    Emitter::new(&c).recorder(recorder).record_now();
    let got: BTreeMap<String, (MetricKind, Option<Unit>)> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, unit, _, _)| {
            let (kind, key) = ck.into_parts();
            (key.name().to_owned(), (kind, unit))
        })
        .collect();
    assert_eq!(got[ACTIVE_REQUESTS], (MetricKind::Gauge, Some(Unit::Count)));
    assert_eq!(got[ACTIVE_TASKS], (MetricKind::Gauge, Some(Unit::Count)));
    assert_eq!(got[READY], (MetricKind::Gauge, None));
    assert_eq!(got[PHASE], (MetricKind::Gauge, None));
    assert_eq!(
        got[REQUESTS_REJECTED],
        (MetricKind::Counter, Some(Unit::Count))
    );
    for counter in [REQUESTS_REJECTED, REQUESTS_COMPLETED_WHILE_DRAINING] {
        assert!(counter.ends_with("_total"), "{counter}");
    }
    for h in [PHASE_DURATION, SHUTDOWN_DURATION, HOOK_DURATION] {
        assert!(h.ends_with("_seconds"), "{h}");
    }
}

/// The final values are "read" only by a `record_now` after the report
/// (a scrape), not by one before it nor by the emitter's own `run`; the
/// wait ends at that scrape, at once.
#[tokio::test(start_paused = true)]
async fn final_scrape_ends_at_the_first_scrape_after_the_report() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let (e, snap) = emitter(&c);
    let run = tokio::spawn(e.clone().run());
    e.record_now(); // a scrape before the shutdown: not the final values
    let waiting = tokio::spawn({
        let e = e.clone();
        async move {
            let start = tokio::time::Instant::now();
            (
                e.final_scrape(Duration::from_secs(30)).await,
                start.elapsed(),
            )
        }
    });
    c.trigger();
    tokio::time::timeout(Duration::from_secs(5), c.wait())
        .await
        .expect("the shutdown ends");
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run ends with the report")
        .unwrap();
    settle().await;
    assert!(!waiting.is_finished(), "run() alone is no scrape");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished(), "still waiting for a scrape");
    e.record_now(); // the scrape
    let (scraped, waited) = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("ends at the scrape")
        .unwrap();
    assert!(scraped);
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
    // What that scrape rendered: the report's counters.
    let v = read(&snap);
    assert_eq!(counter(&v, SHUTDOWNS, &["cause=api", "outcome=drained"]), 1);
}

/// Without a scrape, the wait ends `linger` after the report, and says
/// that nobody read the final values.
#[tokio::test(start_paused = true)]
async fn final_scrape_gives_up_linger_after_the_report() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let (e, _snap) = emitter(&c);
    c.trigger();
    let report = tokio::time::timeout(Duration::from_secs(5), c.wait())
        .await
        .expect("the shutdown ends");
    assert!(report.is_clean(), "{report}");
    let start = tokio::time::Instant::now();
    let scraped = tokio::time::timeout(
        Duration::from_secs(60),
        e.final_scrape(Duration::from_secs(20)),
    )
    .await
    .expect("bounded by linger");
    assert!(!scraped);
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

/// What the README says of `metrics-exporter-prometheus`: without
/// buckets the durations are summaries; with buckets for the prefix,
/// histograms with `_bucket` series.
#[tokio::test(start_paused = true)]
async fn prometheus_writes_the_durations_as_summaries_unless_buckets_are_set() {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    async fn render(builder: PrometheusBuilder) -> String {
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let c = Coordinator::builder()
            .handle_signals(false)
            .build()
            .unwrap();
        let e = Emitter::new(&c).recorder(recorder);
        c.trigger();
        tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .expect("the shutdown ends");
        e.record_now();
        handle.render()
    }
    let plain = render(PrometheusBuilder::new()).await;
    assert!(
        plain.contains("# TYPE tower_graceful_shutdown_duration_seconds summary"),
        "{plain}"
    );
    let bucketed = render(
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("tower_graceful_".into()), &[0.1, 1.0])
            .unwrap(),
    )
    .await;
    assert!(
        bucketed.contains("# TYPE tower_graceful_shutdown_duration_seconds histogram"),
        "{bucketed}"
    );
    assert!(
        bucketed.contains("tower_graceful_shutdown_duration_seconds_bucket{le=\"0.1\"}"),
        "{bucketed}"
    );
}
