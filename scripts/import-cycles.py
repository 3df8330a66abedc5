#!/usr/bin/env python3
"""Fails when a crate's source files import each other in a circle.

    scripts/import-cycles.py [--arrows] CRATE_DIR...

(--arrows also prints every arrow it found, to check what it reads.)

For each crate (a directory with src/lib.rs and/or src/main.rs, each its own
module tree) it follows the `mod` declarations from the root to every file
and draws an arrow from a file to each file whose items it names:
`use crate::…`, `use super::…`, `use self::…`, `use child::…` for a child
module, and the same paths written out in code (`crate::stats::Report`).
A parent declaring `mod child` is not an arrow; a child's `use super::X` is
one, to the parent's file. An item is found in the deepest module of its path
that the crate has (`crate::wire::Origin` is the `wire` file), so an arrow
goes to the file that holds or re-exports the name, as the source reads.

Test-only code (`#[cfg(test)]` modules and items) is left out: a test may
exercise its module through a higher one without the module depending on it.

A circle among files is a strongly connected group of the arrows; each is
printed with the names that tie it, and the exit status is 1. Comments and
string literals are skipped, so a doc comment naming `crate::x` is no arrow.
"""

import os
import re
import sys

# ---------------------------------------------------------------- lexing

TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<raw_string>b?r(?P<hashes>\#*)")
  | (?P<string>b?")
  | (?P<char>b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])')
  | (?P<lifetime>'[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>r\#[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*)
  | (?P<path_sep>::)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(text):
    """Rust tokens that matter here: identifiers, `::` and punctuation, with
    comments, strings, characters, lifetimes and numbers dropped."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        m = TOKEN.match(text, i)
        kind = m.lastgroup if m.lastgroup != "hashes" else "raw_string"
        if kind == "block_comment":
            depth, j = 1, m.end()
            while depth and j < n:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
            continue
        if m.group("raw_string") is not None:
            end = text.find('"' + m.group("hashes"), m.end())
            i = n if end < 0 else end + 1 + len(m.group("hashes"))
            continue
        if kind == "string":
            j = m.end()
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        i = m.end()
        if kind == "ident":
            out.append(m.group("ident").removeprefix("r#"))
        elif kind == "path_sep":
            out.append("::")
        elif kind == "punct":
            out.append(m.group("punct"))
    return out


# ---------------------------------------------------------------- reading one file


def matching(toks, i, open_, close):
    """Index just past the bracket closing the one at toks[i]."""
    depth = 0
    while i < len(toks):
        if toks[i] == open_:
            depth += 1
        elif toks[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def is_test_cfg(attr):
    """`#[cfg(test)]` or `#[cfg(all(test, …))]`: code that exists only in tests."""
    return attr[:2] == ["cfg", "("] and "test" in attr and "not" not in attr and "any" not in attr


def use_paths(toks, prefix=()):
    """The paths of a use tree (`a::{b, c::d as e, f::*}`), each a tuple, with
    the name each brings into scope."""
    paths = []
    i = 0
    current = list(prefix)
    while i < len(toks):
        t = toks[i]
        if t == "{":
            end = matching(toks, i, "{", "}")
            inner = toks[i + 1 : end - 1]
            # Split the group at its top-level commas.
            depth, start = 0, 0
            for k, u in enumerate(inner + [","]):
                if u == "{":
                    depth += 1
                elif u == "}":
                    depth -= 1
                elif u == "," and depth == 0:
                    if inner[start:k]:
                        paths += use_paths(inner[start:k], current)
                    start = k + 1
            return paths
        if t == "as":
            break
        if t != "::":
            current.append(t)
        i += 1
    if current and current[-1] == "self":
        current.pop()
    alias = toks[i + 1] if i + 1 < len(toks) else (current[-1] if current else None)
    if current:
        paths.append((tuple(current), alias))
    return paths


class File:
    def __init__(self, path, module, module_dir):
        self.path = path
        self.module = module  # tuple of segments from the crate root
        self.module_dir = module_dir  # where its `mod x;` children live
        self.children = []  # (name, test-only) of `mod x;` declarations
        self.refs = []  # absolute paths of what the file names
        self.aliases = {}  # a name `use` brought into scope: its absolute path
        self.maybe_aliased = []  # code paths that may start with such a name


def read(file):
    toks = tokens(open(file.path, encoding="utf-8").read())
    # Modules open at each point of the file: (module path, brace depth at
    # which it closes). The file's own module is the outermost.
    stack = [(file.module, -1)]
    inline_children = {file.module: set()}
    depth = 0
    pending_attrs = []
    refs = []
    i = 0

    def absolute(path, module):
        """`crate::…`, `super::…`, `self::…` made absolute; None if external."""
        segs = list(path)
        if segs[0] in ("crate", "$crate"):
            return tuple(segs[1:])
        base = list(module)
        if segs[0] == "self":
            segs = segs[1:]
        elif segs[0] == "super":
            while segs and segs[0] == "super":
                if not base:
                    return None
                base.pop()
                segs = segs[1:]
        else:
            return None
        return tuple(base + segs)

    while i < len(toks):
        t = toks[i]
        module = stack[-1][0]
        if t == "#" and i + 1 < len(toks) and toks[i + 1] in ("[", "!"):
            start = i + 1 if toks[i + 1] == "[" else i + 2
            end = matching(toks, start, "[", "]")
            pending_attrs.append(toks[start + 1 : end - 1])
            i = end
            continue
        test_only = any(is_test_cfg(a) for a in pending_attrs)
        if t in ("pub", "unsafe", "extern") or (t == "(" and i and toks[i - 1] == "pub"):
            # Visibility and qualifiers keep the item's attributes pending.
            if t == "(":
                i = matching(toks, i, "(", ")")
            else:
                i += 1
            continue
        pending_attrs = []
        if t == "mod" and i + 2 < len(toks):
            name = toks[i + 1]
            if toks[i + 2] == ";":
                if module == file.module:
                    file.children.append((name, test_only))
                i += 3
                continue
            if toks[i + 2] == "{":
                if test_only:
                    i = matching(toks, i + 2, "{", "}")
                    continue
                inline_children.setdefault(module, set()).add(name)
                stack.append((module + (name,), depth))
                depth += 1
                i += 3
                continue
        if t == "use":
            end = i
            while end < len(toks) and toks[end] != ";":
                end += 1
            if not test_only:
                for path, alias in use_paths(toks[i + 1 : end]):
                    refs.append((path, module, alias))
            i = end + 1
            continue
        if test_only and t in ("fn", "impl", "const", "static", "struct", "enum", "trait", "type"):
            # A test-only item: skip to the end of its body or declaration.
            j = i
            while j < len(toks) and toks[j] not in ("{", ";"):
                j += 1
            i = matching(toks, j, "{", "}") if j < len(toks) and toks[j] == "{" else j + 1
            continue
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
            if len(stack) > 1 and stack[-1][1] == depth:
                stack.pop()
        elif (
            re.match(r"^[A-Za-z_]", t)
            and i + 1 < len(toks)
            and toks[i + 1] == "::"
            and (i == 0 or toks[i - 1] not in ("::", "in"))
            and t not in ("Self",)
        ):
            # A path in code: `crate::a::b`, `super::x`, or `child::x`.
            j = i
            path = []
            while j < len(toks) and re.match(r"^[A-Za-z_]", toks[j]):
                path.append(toks[j])
                j += 1
                if j < len(toks) and toks[j] == "::":
                    j += 1
                else:
                    break
            refs.append((tuple(path), module, None))
            i = j
            continue
        i += 1

    for path, module, alias in refs:
        resolved = absolute(path, module)
        if resolved is None:
            # `child::x`, written in the parent: a path relative to it.
            if path[0] in inline_children.get(module, set()) or (
                module == file.module and path[0] in {c for c, _ in file.children}
            ):
                resolved = tuple(module) + tuple(path)
            else:
                if alias is None and len(path) > 1:
                    file.maybe_aliased.append(path)
                continue
        file.refs.append(resolved)
        if alias not in (None, "*", "_"):
            file.aliases[alias] = resolved
    file.inline = {m + (c,) for m, cs in inline_children.items() for c in cs}


# ---------------------------------------------------------------- a crate's modules


def crate_files(root_path):
    """Every file of the module tree rooted at `root_path` (lib.rs or main.rs),
    following `mod x;` declarations; test-only modules are left out."""
    root = File(root_path, (), os.path.dirname(root_path))
    files = [root]
    queue = [root]
    while queue:
        f = queue.pop()
        read(f)
        for name, test_only in f.children:
            if test_only:
                continue
            for candidate, child_dir in (
                (os.path.join(f.module_dir, name + ".rs"), os.path.join(f.module_dir, name)),
                (os.path.join(f.module_dir, name, "mod.rs"), os.path.join(f.module_dir, name)),
            ):
                if os.path.exists(candidate):
                    child = File(candidate, f.module + (name,), child_dir)
                    files.append(child)
                    queue.append(child)
                    break
            else:
                sys.exit(f"{f.path}: mod {name}: no file {name}.rs or {name}/mod.rs")
    return files


def arrows(files):
    """{(from file, to file): set of names}, for files of one module tree."""
    by_module = {f.module: f for f in files}
    for f in files:
        for m in f.inline:
            by_module.setdefault(m, f)
    edges, modules = {}, {}
    for f in files:
        # `use crate::report; … report::Table`: the arrow is the `use`, the
        # name is `Table`.
        refs = f.refs + [
            f.aliases[p[0]] + tuple(p[1:])
            for p in f.maybe_aliased
            if p[0] in f.aliases and f.aliases[p[0]] in by_module
        ]
        for resolved in refs:
            # The deepest module on the path that the crate has.
            for k in range(len(resolved), -1, -1):
                if resolved[:k] in by_module:
                    target = by_module[resolved[:k]]
                    break
            if target is f:
                continue
            names = edges.setdefault((f.path, target.path), set())
            if k < len(resolved):
                names.add(resolved[k])
            else:
                # The module itself (`use crate::report;`): named only when
                # nothing in it is.
                modules.setdefault((f.path, target.path), set()).add(resolved[-1] if resolved else "crate")
    for edge, names in modules.items():
        if not edges[edge]:
            edges[edge] = names
    return edges


def circles(edges):
    """Strongly connected groups of more than one file (Tarjan's algorithm)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def main(args):
    show_arrows = "--arrows" in args
    args = [a for a in args if a != "--arrows"]
    if not args:
        sys.exit(__doc__)
    found = []
    checked = 0
    for crate in args:
        roots = [os.path.join(crate, "src", r) for r in ("lib.rs", "main.rs")]
        roots = [r for r in roots if os.path.exists(r)]
        if not roots:
            sys.exit(f"{crate}: no src/lib.rs or src/main.rs")
        for root in roots:
            files = crate_files(root)
            checked += len(files)
            edges = arrows(files)
            if show_arrows:
                for (a, b), names in sorted(edges.items()):
                    print(f"{a} -> {b}: {', '.join(sorted(names))}")
            for group in circles(edges):
                found.append((group, edges))
    for n, (group, edges) in enumerate(found, 1):
        print(f"circle {n}: {len(group)} files: {', '.join(group)}")
        for (a, b), names in sorted(edges.items()):
            if a in group and b in group:
                print(f"  {a} -> {b}: {', '.join(sorted(names))}")
    if found:
        sys.stdout.flush()
        print(
            f"import-cycles: {len(found)} circle(s) of imports in {' '.join(args)}; "
            "move what both sides need into a module that imports neither",
            file=sys.stderr,
        )
        return 1
    print(f"import-cycles: no circles in {' '.join(args)} ({checked} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
