#!/usr/bin/env python3
"""Prints the module import graph of jobs/src, its circles and its upward imports (stdlib only).

    scripts/import-graph.py [--edges] [--check] [SRC_DIR]

A node is a module file (`jobs/src/web/settings.rs` is `web::settings`, a `mod.rs` is its folder);
an edge is a `crate::...` path (in a `use` or inline) or a `super::...` path, resolved to the
deepest module it names. Comments, strings and `#[cfg(test)]` modules are not read: the graph is
the product's. Edges between a module and its own parent or child are part of that module and not
counted, so a circle is always between modules that could stand apart.

Printed: the circles (each elementary cycle, shortest first), then the upward imports, by layer
from the bottom: shared modules at the crate root, the jobs (`jobs::...`), the run executor (its
catalog maps each job to its body), the scheduler, the faces
(`web`, `bench`), the CLI (`cmd`); a module importing from a layer above its own is listed (a shared
module reading a job's type, `web` reading through `cmd`). `--edges` prints every edge first;
`--check` exits 1 when there is a circle or an upward import.
"""

import os
import re
import signal
import sys
from collections import defaultdict

# Layers, top first: a module may import from its own layer and the ones below. `cmd` dispatches
# to the other faces (`serve` starts `web`, `bench` runs `bench`), so it sits above them.
LAYERS = [
    ({"cmd", "main"}, "cli"),
    ({"web", "bench"}, "face"),
    ({"scheduler", "alerts"}, "service"),
    ({"executor"}, "executor"),
    ({"jobs"}, "job"),
]


def layer(module):
    top = module.split("::")[0]
    for rank, (tops, name) in enumerate(LAYERS):
        if top in tops:
            return len(LAYERS) - rank, name
    return 0, "shared"


def strip(text):
    """The code with comments, strings and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j) + '""')
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j) + '""')
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(\\.[^']*|[^\\'])'").match(text, i)):
            out.append("' '")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """The code without `#[cfg(test)] mod name { ... }` blocks (their imports are the tests')."""
    while m := re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]
    return code


def modules(src):
    """Module path -> file, and the files of `#[cfg(test)] mod x;` children (left out)."""
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"],):
                rel = []
            found["::".join(rel)] = os.path.join(root, f)
    tests = set()
    for mod, path in found.items():
        with open(path, encoding="utf-8") as fh:
            code = strip(fh.read())
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code):
            tests.add(join(mod, m.group(1)))
    return found, tests


def join(*parts):
    return "::".join(p for p in parts if p)


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner = tree[:start], tree[start + 1 : i]
                parts, d, s = [], 0, 0
                for k, c in enumerate(inner):
                    d += {"{": 1, "}": -1}.get(c, 0)
                    if c == "," and d == 0:
                        parts.append(inner[s:k])
                        s = k + 1
                parts.append(inner[s:])
                return [x for p in parts if p for x in expand(prefix + p)]
    return [re.sub(r"\bas\w+$", "", tree)]


def resolve(path, here, known):
    """The deepest known module that `path` (as written in module `here`) names, or None."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    base = here.split("::") if here else []
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    elif join(*base, segs[0]) in known:
        pass  # a child module named by a relative path
    else:
        return None  # an external crate or a local item
    best = None
    for k in range(len(segs), -1, -1):
        cand = join(*base, *segs[:k])
        if cand in known:
            best = cand
            break
    return best


def related(a, b):
    """Whether one module is the other or contains it."""
    return a == b or a.startswith(b + "::") or b.startswith(a + "::") or not a or not b


def graph(src):
    known, tests = modules(src)
    edges = defaultdict(set)
    for mod, path in sorted(known.items()):
        if any(mod == t or mod.startswith(t + "::") for t in tests):
            continue
        with open(path, encoding="utf-8") as fh:
            code = drop_test_modules(strip(fh.read()))
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            paths.extend(expand(m.group(1)))
        paths.extend(re.findall(r"\b(?:crate|super)(?:::\w+)+", code))
        for p in paths:
            target = resolve(p, mod, known)
            if target is not None and not related(mod, target):
                if not any(target == t or target.startswith(t + "::") for t in tests):
                    edges[mod].add(target)
    return known, edges


def cycles(edges, limit=200):
    """Elementary cycles, each from its least node, shortest first (at most `limit`)."""
    found = []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for start in nodes:
        stack = [(start, [start])]
        while stack and len(found) < limit:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ()), reverse=True):
                if nxt == start:
                    found.append(path)
                elif nxt > start and nxt not in path and len(path) < 8:
                    stack.append((nxt, path + [nxt]))
    return sorted(found, key=lambda c: (len(c), c))


def upward(edges):
    out = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            (la, na), (lb, nb) = layer(a), layer(b)
            if lb > la:
                out.append(f"{a} ({na}) -> {b} ({nb})")
    return out


def main(argv):
    flags = {a for a in argv if a.startswith("--")}
    rest = [a for a in argv if not a.startswith("--")]
    src = rest[0] if rest else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jobs", "src")
    known, edges = graph(src)
    if "--edges" in flags:
        print(f"edges ({sum(map(len, edges.values()))} between {len(known)} modules):")
        for a in sorted(edges):
            print(f"  {a or 'crate'} -> {', '.join(sorted(edges[a]))}")
        print()
    circles = cycles(edges)
    print(f"circles: {len(circles)}")
    for c in circles:
        print("  " + " -> ".join(c + [c[0]]))
    ups = upward(edges)
    print(f"upward imports: {len(ups)}")
    for u in ups:
        print("  " + u)
    if "--check" in flags and (circles or ups):
        return 1
    return 0


if __name__ == "__main__":
    # `import-graph.py --edges | head` ends quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
