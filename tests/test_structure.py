"""The shape of pbxlink's imports, read from the code itself (AST), never by importing it.

A part is a top-level package or module under pbxlink/ (`calls`, `web`, `config`, `daemon`...).
Every import statement counts: at the top, inside `if TYPE_CHECKING:` (a part that names
another's types depends on it) and inside functions. The rules:

- the parts import each other without a cycle (a cycle found is printed, edge by edge, with
  the modules that make each edge);
- the sans-IO cores, calls/ and desk/, import nothing that does I/O, reads a clock or logs
  (`IMPURE`), and of pbxlink only each other and the value types of `VALUE_TYPES`; what they
  import is checked by the same rule, transitively, package `__init__`s included (importing
  `pbxlink.clients.card` runs `pbxlink/clients/__init__.py` first);
- nothing is imported inside a function, except the few of `LATE_IMPORTS`, each with its reason
  (a late import is how a cycle hides);
- each part keeps the promise its `__init__.py` states under "Never imports" (`NEVER`).
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pbxlink"

#: the sans-IO cores (desk/ is checked once it exists)
CORES = ("calls", "desk")

#: what a core may not import, with anything under it. A core's inputs, the time included,
#: arrive as arguments, and its outputs leave as return values.
IMPURE = {
    # I/O: files, sockets, processes, threads, event loops
    "asyncio": "an event loop",
    "concurrent": "threads and processes",
    "glob": "the file system",
    "importlib": "loads modules and package files",
    "io": "streams",
    "mmap": "files",
    "multiprocessing": "processes",
    "os": "the environment and the file system",
    "pathlib": "the file system",
    "select": "sockets",
    "selectors": "sockets",
    "shutil": "the file system",
    "signal": "the process",
    "socket": "sockets",
    "ssl": "sockets",
    "subprocess": "processes",
    "sys": "the process's streams and arguments",
    "tempfile": "the file system",
    "threading": "threads",
    "urllib.request": "the network",
    "http": "the network",
    # the project's I/O libraries
    "aiohttp": "the network",
    "aiomysql": "a database",
    "aiosqlite": "a database",
    "asyncpg": "a database",
    "panoramisk": "the AMI socket",
    "prometheus_client": "a process-wide registry",
    "pymysql": "a database",
    "sqlite3": "a database",
    "tqdm": "the terminal",
    "websockets": "the network",
    # a clock, or chance: inputs a test could not fix
    "time": "a clock",
    "random": "chance",
    "secrets": "chance",
    # logging
    "logging": "logging",
    "structlog": "logging",
}
#: `datetime` stays allowed for its types and arithmetic; reading its clock is not
CLOCK_CALLS = ("now", "today", "utcnow")

#: modules of other parts a core may use, each checked by the cores' rule as well: none. The
#: desk reads a client, a CRM answer and an operator through Protocols of its own (desk/card.py)
VALUE_TYPES: dict[str, str] = {}

#: (module, function, what it imports) -> why it is imported there and not at the top
LATE_IMPORTS = {
    ("pbxlink.cli", "cmd_run", "pbxlink.daemon"): (
        "the daemon's imports (websockets, aiosqlite, panoramisk, prometheus_client) would "
        "double the start of every other command: token, replay, check-config, clients"
    ),
    ("pbxlink.clients.sources.sql", "_lost_connection", "asyncpg"): (
        "a database driver is loaded only once a source of its dialect has failed; the check "
        "works without the driver installed"
    ),
    ("pbxlink.clients.sources.sql", "_lost_connection", "pymysql"): (
        "a database driver is loaded only once a source of its dialect has failed; the check "
        "works without the driver installed"
    ),
    ("pbxlink.clients.sources.sql", "SqlSource._get_pool", "asyncpg"): (
        "a database driver is loaded only when a source of its dialect first connects"
    ),
    ("pbxlink.clients.sources.sql", "SqlSource._get_pool", "aiomysql"): (
        "a database driver is loaded only when a source of its dialect first connects"
    ),
    ("pbxlink.clients.sources.sql", "SqlSource._mysql_rows", "aiomysql"): (
        "a database driver is loaded only when a source of its dialect first connects"
    ),
}

EVERY_OTHER_PART = "*"
#: part -> the parts it never imports, as its __init__.py docstring says ("Never imports")
NEVER: dict[str, tuple[str, ...] | str] = {
    "ami": ("calllog", "clients", "desk", "hub", "web", "sim", "config", "daemon"),
    "calls": EVERY_OTHER_PART,
    "calllog": ("clients", "hub", "web", "daemon"),
    "clients": ("calllog",),
    "db": EVERY_OTHER_PART,
    "hub": ("web", "ami", "calllog", "clients", "config", "daemon"),
    "operators": EVERY_OTHER_PART,
    "sim": ("calls", "calllog", "clients", "desk", "hub", "web", "config", "daemon"),
    "web": ("ami", "sim", "config", "daemon"),
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports: a pbxlink module when one is named, else the name given
    function: str | None  # the function it is imported in (qualified), None at module level
    type_checking: bool  # under `if TYPE_CHECKING:`
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py"


def part_of(module: str) -> str | None:
    """`pbxlink.web.app` -> `web`; the root package `pbxlink` itself is no part."""
    names = module.split(".")
    return names[1] if len(names) > 1 else None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []  # enclosing classes and functions
        self.functions = 0  # how many of them are functions
        self.type_checking = 0
        self.found: list[Import] = []
        self.clock_reads: list[int] = []

    def visit_If(self, node: ast.If) -> None:
        guarded = ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        self.type_checking += guarded
        for child in node.body:
            self.visit(child)
        self.type_checking -= guarded
        for child in node.orelse:
            self.visit(child)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
            self.clock_reads.append(node.lineno)
        self.generic_visit(node)

    def _add(self, target: str, line: int) -> None:
        function = ".".join(self.scope) if self.functions else None
        self.found.append(Import(self.module, target, function, self.type_checking > 0, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not is_package(self.module):
                package.pop()
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in FILES else base, node.lineno)


@dataclass(frozen=True, slots=True)
class Code:
    """What the checks read: module -> is it a package, its imports, its clock reads."""

    packages: dict[str, bool]
    imports: dict[str, list[Import]]
    clock_reads: dict[str, list[int]]


def read_code() -> Code:
    imports: dict[str, list[Import]] = {}
    clock_reads: dict[str, list[int]] = {}
    for module, path in FILES.items():
        collector = _Collector(module)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        imports[module] = collector.found
        clock_reads[module] = collector.clock_reads
    return Code({m: is_package(m) for m in FILES}, imports, clock_reads)


CODE = read_code()


def pbxlink_modules(target: str, code: Code = CODE) -> Iterator[str]:
    """The pbxlink modules that importing `target` runs: its packages' __init__s, then it."""
    names = target.split(".")
    for end in range(1, len(names) + 1):
        name = ".".join(names[:end])
        if name in code.packages:
            yield name


def part_graph() -> dict[str, dict[str, list[Import]]]:
    """part -> part it imports -> the imports that make the edge."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for found in CODE.imports.values():
        for imp in found:
            source, target = part_of(imp.module), part_of(imp.target)
            if imp.target.startswith("pbxlink.") and source and target and source != target:
                graph.setdefault(source, {}).setdefault(target, []).append(imp)
    return graph


def find_cycle(graph: dict[str, dict[str, list[Import]]]) -> list[str] | None:
    """A cycle of parts as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def find_cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """One cycle per tangle of parts (strongly connected component), so all show at once."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    tangles = {frozenset(b for b in reach[a] if a in reach.get(b, ())) for a in graph}
    cycles = []
    for tangle in sorted((t for t in tangles if len(t) > 1), key=sorted):
        inside = {a: {b: e for b, e in graph[a].items() if b in tangle} for a in tangle}
        cycle = find_cycle(inside)
        assert cycle is not None
        cycles.append(cycle)
    return cycles


def describe_edges(graph: dict[str, dict[str, list[Import]]], cycle: list[str]) -> str:
    lines = [f"  {' -> '.join(cycle)}"]
    for a, b in itertools.pairwise(cycle):
        made = sorted({f"{i.module}:{i.line} imports {i.target}" for i in graph[a][b]})
        more = " ..." if len(made) > 4 else ""
        lines.append(f"    {a} -> {b}: " + "; ".join(made[:4]) + more)
    return "\n".join(lines)


# -- (a) no cycle between parts ----------------------------------------------------------------


def test_the_parts_import_each_other_without_a_cycle() -> None:
    graph = part_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between parts:\n" + "\n".join(
        describe_edges(graph, cycle) for cycle in cycles
    )


def test_every_cycle_is_found_and_printed() -> None:
    """The finder itself, on made-up graphs: a cycle three parts long, and a separate one."""
    imp = Import("pbxlink.a.x", "pbxlink.b.y", None, False, 3)
    graph = {"a": {"b": [imp]}, "b": {"c": [imp]}, "c": {"a": [imp]}, "d": {"a": [imp]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    text = describe_edges(graph, ["a", "b", "c", "a"])
    assert text.startswith("  a -> b -> c -> a\n    a -> b: pbxlink.a.x:3 imports pbxlink.b.y\n")
    graph |= {"e": {"f": [imp]}, "f": {"e": [imp]}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b": [imp]}, "b": {}}) == []


# -- (b) the sans-IO cores ----------------------------------------------------------------------


def _allowed(module: str, code: Code) -> bool:
    """A core's module, a value type, or a package whose __init__ importing one of them runs."""
    if part_of(module) in CORES or module in VALUE_TYPES:
        return True
    return code.packages[module] and any(
        name.startswith(module + ".") for name in (*VALUE_TYPES, *(f"pbxlink.{c}." for c in CORES))
    )


ALLOW = "calls/, desk/ or a module of VALUE_TYPES (tests/test_structure.py)"


def impurities(start: Iterable[str], code: Code = CODE) -> list[str]:
    """What the modules of `start`, and every pbxlink module they import (transitively, with
    the packages that importing runs), import against the cores' rule; each with its chain."""
    seen: dict[str, list[str]] = {}  # module -> how it was reached
    queue = []
    for module in start:
        for name in pbxlink_modules(module, code):
            if name not in seen:
                seen[name] = [name]
                queue.append(name)
    problems = [f"{m}: not {ALLOW}" for m in seen if not _allowed(m, code)]
    while queue:
        module = queue.pop(0)
        chain = " -> ".join(seen[module])
        for line in code.clock_reads.get(module, []):
            problems.append(f"{chain}:{line}: reads the clock (.now/.today)")
        for imp in code.imports[module]:
            if imp.target == "pbxlink" or imp.target.startswith("pbxlink."):
                for name in pbxlink_modules(imp.target, code):
                    if not _allowed(name, code):
                        problems.append(f"{chain}:{imp.line}: imports {name}, not {ALLOW}")
                    elif name not in seen:
                        seen[name] = [*seen[module], name]
                        queue.append(name)
                continue
            for banned, why in IMPURE.items():
                if imp.target == banned or imp.target.startswith(banned + "."):
                    problems.append(f"{chain}:{imp.line}: imports {imp.target} ({why})")
    return problems


@pytest.mark.parametrize("core", CORES)
def test_the_cores_import_no_io_clock_logging_or_other_parts(core: str) -> None:
    modules = [m for m in FILES if part_of(m) == core]
    if not modules and core == "desk":
        pytest.skip("pbxlink/desk/ does not exist yet")
    assert modules, f"pbxlink/{core}/ is gone: CORES names it"

    problems = impurities(modules)
    assert not problems, "a sans-IO core imports what it must not:\n" + "\n".join(problems)


def test_the_value_types_are_pure_too() -> None:
    assert set(VALUE_TYPES) <= set(FILES), "VALUE_TYPES names a module that is gone"
    problems = impurities(VALUE_TYPES)
    assert not problems, "a value type the cores may import is not pure:\n" + "\n".join(problems)


def test_the_purity_check_sees_what_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    """A made-up tree: an I/O import, a clock read and an I/O part, each reached through a
    value type, are reported with the chain that reaches them; a pure chain is not."""
    fake, card = "pbxlink.calls.fake", "pbxlink.clients.card"
    monkeypatch.setitem(VALUE_TYPES, card, "a made-up value type")
    code = Code(
        packages={
            "pbxlink": True,
            "pbxlink.calls": True,
            fake: False,
            "pbxlink.clients": True,
            card: False,
            "pbxlink.web": True,
            "pbxlink.web.app": False,
        },
        imports={
            "pbxlink": [],
            "pbxlink.calls": [],
            fake: [Import(fake, card, None, False, 1)],
            "pbxlink.clients": [],
            card: [
                Import(card, "asyncio.tasks", None, True, 2),
                Import(card, "pbxlink.web.app", "f", False, 3),
                Import(card, "datetime", None, False, 4),
            ],
            "pbxlink.web": [],
            "pbxlink.web.app": [],
        },
        clock_reads={fake: [7], card: []},
    )
    problems = impurities([fake], code)
    assert problems == [
        "pbxlink.calls.fake:7: reads the clock (.now/.today)",
        "pbxlink.calls.fake -> pbxlink.clients.card:2: imports asyncio.tasks (an event loop)",
        f"pbxlink.calls.fake -> pbxlink.clients.card:3: imports pbxlink.web, not {ALLOW}",
        f"pbxlink.calls.fake -> pbxlink.clients.card:3: imports pbxlink.web.app, not {ALLOW}",
    ]
    code.imports[card][:] = [Import(card, "datetime", None, False, 4)]
    code.clock_reads[fake].clear()
    assert impurities([fake], code) == []


# -- (c) no import inside a function ------------------------------------------------------------


def test_no_import_inside_a_function_but_the_justified_ones() -> None:
    late = {
        (imp.module, imp.function, imp.target): imp
        for found in CODE.imports.values()
        for imp in found
        if imp.function is not None and not imp.type_checking
    }
    unexpected = sorted(
        f"{imp.module}:{imp.line} ({imp.function}) imports {imp.target}"
        for key, imp in late.items()
        if key not in LATE_IMPORTS
    )
    assert not unexpected, (
        "imports inside functions (move them to the top; if that makes a cycle, fix the cycle; "
        "if there is another reason, add it to LATE_IMPORTS):\n" + "\n".join(unexpected)
    )
    stale = sorted(str(key) for key in LATE_IMPORTS if key not in late)
    assert not stale, "LATE_IMPORTS lists imports that are gone:\n" + "\n".join(stale)


# -- (d) what each part's __init__.py promises --------------------------------------------------


@pytest.mark.parametrize("part", sorted(NEVER))
def test_each_part_keeps_its_never_imports(part: str) -> None:
    package = f"pbxlink.{part}"
    doc = ast.get_docstring(ast.parse(FILES[package].read_text(encoding="utf-8"))) or ""
    assert re.search(r"[Nn]ever imports|[Ii]mports no ", doc), f"{package}: no 'Never imports'"
    parts = {p for p in map(part_of, FILES) if p}
    never = NEVER[part]
    forbidden = parts - {part} if never == EVERY_OTHER_PART else set(never)
    assert forbidden <= parts | {"desk"}, f"NEVER[{part!r}] names a part that does not exist"
    broken = sorted(
        f"{imp.module}:{imp.line} imports {imp.target}"
        for target, found in part_graph().get(part, {}).items()
        if target in forbidden
        for imp in found
    )
    assert not broken, f"{part}/ imports what its __init__.py says it never does:\n" + "\n".join(
        broken
    )
