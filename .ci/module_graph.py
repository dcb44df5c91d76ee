#!/usr/bin/env python3
"""Prints the graph of the library's top-level modules (from `crate::…` paths
in code, comments and doc links aside) and exits 1 if it has a cycle.

Usage: python3 .ci/module_graph.py [crates/tower-graceful/src]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates/tower-graceful/src"
# What the crate root re-exports, by the module that defines it.
ROOT_ITEMS = {
    "Coordinator": "coordinator", "Builder": "coordinator", "Phase": "core",
    "Graceful": "graceful", "GracefulLayer": "graceful",
    "ShutdownReport": "report", "ShutdownSignal": "signal",
    "MissingShutdownSignal": "integrations", "serve": "connection",
    "grpc_health": "integrations", "shutdown_metrics": "integrations",
    "systemd": "integrations",
}
SKIP = {"lib.rs", "tests.rs", "model_tests.rs"}


def module_of(path):
    rel = os.path.relpath(path, root)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def code_lines(text):
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        # Drop trailing comments (good enough: no `//` inside our paths).
        yield line.split("//")[0]


edges = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs") or (dirpath == root and f in SKIP):
            continue
        path = os.path.join(dirpath, f)
        src = module_of(path)
        text = open(path, encoding="utf-8").read()
        # Test modules inside a file may reach anywhere.
        text = re.split(r"#\[cfg\(all\(test|#\[cfg\(test\)\]", text)[0]
        for line in code_lines(text):
            for m in re.finditer(r"crate::(\w+)", line):
                dst = m.group(1)
                dst = ROOT_ITEMS.get(dst, dst)
                if dst != src:
                    edges.setdefault(src, set()).add(dst)
            # `use crate::{a::x, b::y}` groups.
            for m in re.finditer(r"crate::\{([^}]*)\}", line):
                for part in m.group(1).split(","):
                    dst = part.strip().split("::")[0]
                    dst = ROOT_ITEMS.get(dst, dst)
                    if dst and dst != src:
                        edges.setdefault(src, set()).add(dst)

for src in sorted(edges):
    print(f"{src:14} -> {', '.join(sorted(edges[src]))}")

# Cycles: depth-first search for back edges.
state = {}
stack = []
cycles = []


def visit(n):
    state[n] = 1
    stack.append(n)
    for d in sorted(edges.get(n, ())):
        if state.get(d) == 1:
            cycles.append(stack[stack.index(d):] + [d])
        elif d not in state:
            visit(d)
    stack.pop()
    state[n] = 2


for n in sorted(edges):
    if n not in state:
        visit(n)

if cycles:
    for c in cycles:
        print("cycle: " + " -> ".join(c))
    sys.exit(1)
print("no cycles")
