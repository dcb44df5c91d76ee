#!/usr/bin/env python3
"""One-off: rewrites paths to the crate's items after the module reshape
(crate root -> one module per middleware). Usage: rename_paths.py FILE..."""
import re
import sys

NEW = {
    "InFlight": "in_flight::InFlight", "InFlightLayer": "in_flight::InFlightLayer",
    "Drain": "drain::Drain", "DrainLayer": "drain::DrainLayer",
    "RejectContext": "drain::RejectContext",
    "Readiness": "probe::Readiness", "ReadinessGate": "probe::ReadinessGate",
    "ReadinessService": "probe::ReadinessService", "LivenessService": "probe::LivenessService",
    "ProbeLayer": "probe::ProbeLayer", "Probes": "probe::Probe",
    "ReadinessStatus": "probe::ReadinessStatus", "FixedBody": "probe::FixedBody",
    "SignalLayer": "add_signal::AddSignalLayer", "AddSignal": "add_signal::AddSignal",
    "ConfigError": "coordinator::ConfigError",
    "DEFAULT_CLEANUP_TIMEOUT": "coordinator::DEFAULT_CLEANUP_TIMEOUT",
    "DEFAULT_DRAIN_DEADLINE": "coordinator::DEFAULT_DRAIN_DEADLINE",
    "DEFAULT_PRE_DRAIN_DELAY": "coordinator::DEFAULT_PRE_DRAIN_DELAY",
    "DEFAULT_RETRY_AFTER": "coordinator::DEFAULT_RETRY_AFTER",
    "DEFAULT_REUSE_GRACE": "coordinator::DEFAULT_REUSE_GRACE",
    "GRPC_HEALTH_WATCH": "coordinator::GRPC_HEALTH_WATCH",
    "CloseConnections": "coordinator::CloseConnections",
    "Draining": "coordinator::Draining",
    "HookRegistrationError": "coordinator::HookRegistrationError",
    "DrainOutcome": "report::DrainOutcome", "HookOutcome": "report::HookOutcome",
    "HookReport": "report::HookReport", "Straggler": "report::Straggler",
    "StragglerKind": "report::StragglerKind", "TriggerCause": "report::TriggerCause",
    "InFlightGuard": "signal::TaskGuard", "Cancelled": "signal::Draining",
}
SUB = {  # inside future:: / body_types::
    "future::DrainFuture": "drain::ResponseFuture",
    "future::GracefulFuture": "graceful::ResponseFuture",
    "future::CountedFuture": "in_flight::CountedFuture",
    "future::InFlightFuture": "in_flight::ResponseFuture",
    "body_types::DrainBody": "drain::ResponseBody",
    "body_types::GracefulBody": "graceful::ResponseBody",
    "body_types::CountedBody": "in_flight::CountedBody",
    "body_types::InFlightBody": "in_flight::ResponseBody",
}


def fix(text, prefix):
    for old, new in SUB.items():
        text = re.sub(rf"\b{prefix}::{old}\b", f"{prefix}::{new}", text)

    def group(m):
        items = [i.strip() for i in m.group(1).split(",") if i.strip()]
        out = []
        for i in items:
            name = i.split(" as ")[0].strip()
            rest = i[len(name):]
            out.append(NEW.get(name, name) + rest)
        return f"{prefix}::{{" + ", ".join(out) + "}"

    text = re.sub(rf"\b{prefix}::\{{([^{{}}]*)\}}", group, text, flags=re.S)
    for old, new in NEW.items():
        text = re.sub(rf"\b{prefix}::{old}\b(?!::)", f"{prefix}::{new}", text)
        text = re.sub(rf"\b{prefix}::{old}::", f"{prefix}::{new}::", text)
    return text


BARE = [
    (r"\bInFlightGuard\b", "TaskGuard"),
    (r"\bProbes\b", "Probe"),
    (r"\bSignalLayer\b", "AddSignalLayer"),
    (r"\.is_shutting_down\(\)", ".is_draining()"),
    (r"\b(\w*signal\w*|sig|shutdown)\.cancelled_owned\(\)", r"\1.draining()"),
    (r"\b(\w*signal\w*|sig|shutdown)\.cancelled\(\)", r"\1.draining()"),
    (r"\bGracefulFuture\b", "graceful::ResponseFuture"),
    (r"\bGracefulBody\b", "graceful::ResponseBody"),
]


def bare(text):
    for pat, rep in BARE:
        text = re.sub(pat, rep, text)
    return text


for path in sys.argv[1:]:
    s = open(path, encoding="utf-8").read()
    t = bare(fix(fix(s, "crate"), "tower_graceful"))
    if t != s:
        open(path, "w", encoding="utf-8").write(t)
        print("rewrote", path)
