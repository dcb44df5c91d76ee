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
    "Coordinator": "coordinator", "Builder": "coordinator", "PreDrain": "coordinator",
    "Phase": "core",
    "Graceful": "graceful", "GracefulLayer": "graceful",
    "ShutdownReport": "report", "ShutdownSignal": "signal",
    "MissingShutdownSignal": "integrations", "serve": "connection",
    "grpc_health": "integrations", "shutdown_metrics": "integrations",
    "systemd": "integrations", "restart": "integrations",
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

# ---- every level below the top: the files inside each folder ----
# A file's module path: core/counter/mod.rs -> ["core", "counter"]. An edge
# from file A to module path P counts, at the folder F that holds both A's
# and P's next components, as an edge between those two siblings. The
# folder's own mod.rs is the sibling "mod" (a facade may re-export its
# children: `pub use` / `pub(crate) use` lines are not edges).


def modpath(path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def resolve(here, line):
    """Module paths a line of `here` names through crate::, super:: or self::."""
    out = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)", line):
        head, tail = m.group(1), m.group(2).split("::")[1:]
        if head == "crate":
            out.append(tail)
        elif head == "super":
            out.append(here[:-1] + tail)
        else:
            out.append(here + tail)
    for m in re.finditer(r"\b(crate|super|self)::\{([^}]*)\}", line):
        base = {"crate": [], "super": here[:-1], "self": here}[m.group(1)]
        for part in m.group(2).split(","):
            part = part.strip()
            if part:
                out.append(base + part.split("::"))
    return out


children = {}
for dirpath, dirs, files in os.walk(root):
    folder = tuple(os.path.relpath(dirpath, root).split(os.sep)) if dirpath != root else ()
    children[folder] = {f[:-3] for f in files if f.endswith(".rs")} | set(dirs)

inner = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs") or (dirpath == root and f in SKIP):
            continue
        path = os.path.join(dirpath, f)
        here = modpath(path)
        is_mod = f == "mod.rs"
        text = open(path, encoding="utf-8").read()
        text = re.split(r"#\[cfg\(all\(test|#\[cfg\(test\)\]", text)[0]
        for line in code_lines(text):
            if re.match(r"\s*pub(\([^)]*\))?\s+use\b", line) or re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s", line):
                continue
            for dst in resolve(here if is_mod else here, line):
                # The deepest folder both sit in.
                src_full = here + (["mod"] if is_mod else [])
                k = 0
                while k < len(src_full) - 1 and k < len(dst) and src_full[k] == dst[k]:
                    k += 1
                if k == 0:
                    continue  # top level: checked above
                folder = tuple(src_full[:k])
                a = src_full[k] if k < len(src_full) else "mod"
                b = dst[k] if k < len(dst) else "mod"
                if b not in children.get(folder, ()):
                    b = "mod"  # an item of the folder's own mod.rs
                if a != b:
                    inner.setdefault(folder, {}).setdefault(a, set()).add(b)


def cycles_of(graph):
    seen, stack, found = {}, [], []

    def go(n):
        seen[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if seen.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in seen:
                go(d)
        stack.pop()
        seen[n] = 2

    for n in sorted(graph):
        if n not in seen:
            go(n)
    return found


inner_cycles = []
for folder in sorted(inner):
    for src in sorted(inner[folder]):
        print(f"{'/'.join(folder)}/{src:10} -> {', '.join(sorted(inner[folder][src]))}")
    for c in cycles_of(inner[folder]):
        inner_cycles.append("/".join(folder) + ": " + " -> ".join(c))
if inner_cycles:
    for c in inner_cycles:
        print("cycle: " + c)
    sys.exit(1)
print("no cycles inside any folder")
