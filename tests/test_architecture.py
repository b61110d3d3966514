"""The floors of docs/architecture.md, read from the code's imports (ast, nothing is imported).

Every ``import`` and ``from ... import`` in a module counts: at the top, inside a
function (heavy libraries are imported there), or under ``TYPE_CHECKING``. A
module imports from its own floor or the floors below; no stage imports
another stage; no two curate modules import each other, directly or around a
circle; nothing but the CLI imports ``curate.train``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "curate"

# Module (or package prefix) -> floor, as drawn in docs/architecture.md. The longest matching name decides.
FLOORS: dict[str, int] = {
    # floor 4: the command line, and what runs the stages from it
    "curate.cli": 4, "curate.train.cli": 4, "curate.demo": 4,
    # floor 3: one module per stage; train consumes exports and manifests
    "curate.stages": 3, "curate.train": 3,
    # floor 2: dataset formats, the HTML report's pieces, the review App's records and FiftyOne adapter
    "curate.formats": 2, "curate.report": 2, "curate.review": 2,
    # floor 1: nouns and helpers
    **dict.fromkeys([f"curate.{m}" for m in (
        "augment", "boxes", "console", "derive", "engine", "faces", "features", "geometry", "groups", "hashing",
        "imageio", "index", "labelmap", "lineage", "locate", "models", "parallel", "partition", "paths", "units",
        "verify", "walk")], 1),
    "curate.copydetect": 1,  # local features stored at ingest, LSH candidates, RANSAC on stored keypoints (issue 15)
    "curate.nearcopies": 1,  # dedupe's near-copy search and pixel verification, shared with check (issue 15)
    "curate.labelstudio": 1,  # Label Studio's config, box units, REST client and local server (issue 16)
    # floor 0: the workspace and the manifest contract it validates against
    "curate": 0, "curate.errors": 0, "curate.parts": 0, "curate.schema": 0, "curate.summary": 0, "curate.workspace": 0,
}

# Imports between stages that are still allowed, each with the reason it is temporary. None is left: convert
# reads with curate.formats.source and writes with curate.formats.publish, as ingest and export do.
TEMPORARY_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> int:
    owner = max((name for name in FLOORS if module == name or module.startswith(name + ".")), key=len)
    return FLOORS[owner]


def _resolve(name: str) -> str | None:
    """The curate module an imported name lives in (``curate.stages.dedupe.mark_exact`` -> the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str) -> dict[str, int]:
    """The curate modules ``source`` imports, each with the line of its first import."""
    is_package = MODULES[module].name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: from the module's own package upward
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "curate" else None
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {m: imports_of(m, p.read_text(encoding="utf-8")) for m, p in MODULES.items()}


def upward_and_sideways(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that breaks a floor rule, as ``module:line -> target (why)``."""
    problems = []
    for m, targets in sorted(graph.items()):
        for t, line in sorted(targets.items()):
            if (m, t) in TEMPORARY_EXCEPTIONS:
                continue
            if floor_of(t) > floor_of(m):
                problems.append(f"{m}:{line} -> {t} (floor {floor_of(m)} imports floor {floor_of(t)})")
            elif m.startswith("curate.stages.") and t.startswith("curate.stages."):
                problems.append(f"{m}:{line} -> {t} (a stage imports another stage)")
            elif t.startswith("curate.train") and not m.startswith("curate.train") and m != "curate.cli":
                problems.append(f"{m}:{line} -> {t} (only the CLI imports curate.train)")
    return problems


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_every_module_has_a_floor() -> None:
    unplaced = [m for m in MODULES
                if m != "curate" and not any(m == n or m.startswith(n + ".") for n in FLOORS if n != "curate")]
    assert unplaced == [], f"add these to FLOORS here and to the drawing in docs/architecture.md: {unplaced}"


def test_imports_go_down_and_no_stage_imports_another() -> None:
    assert upward_and_sideways(GRAPH) == []


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_the_drawing_in_the_docs_names_every_floor_one_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = text.split("```")[1]
    floors: dict[int, str] = {}
    current = -1
    for line in drawing.splitlines():
        m = re.match(r"\s*floor (\d)", line)
        if m:
            current = int(m.group(1))
        if current >= 0:
            floors[current] = floors.get(current, "") + " " + line
    for name, floor in FLOORS.items():
        short = name.rpartition(".")[2]
        if name == "curate" or name.count(".") > 1:
            continue
        assert re.search(rf"\b{short}\b", floors.get(floor, "")), f"{name}: not drawn on floor {floor}"


# -- the checks themselves catch what they are for ---------------------------------------

@pytest.mark.parametrize("graph, expected", [
    # a stage importing another stage, as ingest and dedupe did (mark_exact)
    ({"curate.stages.ingest": {"curate.stages.dedupe": 56}}, ["curate.stages.ingest:56 -> curate.stages.dedupe "
                                                              "(a stage imports another stage)"]),
    # a helper importing a stage
    ({"curate.units": {"curate.stages.split": 3}}, ["curate.units:3 -> curate.stages.split (floor 1 imports "
                                                    "floor 3)"]),
    # the train CLI importing the main CLI (emit, before curate.console)
    ({"curate.train.cli": {"curate.cli": 98}}, []),  # same floor: allowed here, but a cycle (below)
    # a stage importing train
    ({"curate.stages.export": {"curate.train.data": 1}}, ["curate.stages.export:1 -> curate.train.data "
                                                          "(only the CLI imports curate.train)"]),
])
def test_the_floor_rules_report_breaches(graph: dict[str, dict[str, int]], expected: list[str]) -> None:
    assert upward_and_sideways(graph) == expected


def test_cycles_are_found() -> None:
    graph = {"curate.cli": {"curate.train.cli": 1}, "curate.train.cli": {"curate.cli": 2},
             "curate.stages.split": {"curate.stages.check": 1}, "curate.stages.check": {"curate.units": 1},
             "curate.units": {"curate.stages.split": 1}, "curate.index": {}}
    assert cycles(graph) == [["curate.cli", "curate.train.cli"],
                             ["curate.stages.check", "curate.stages.split", "curate.units"]]


def test_imports_are_read_everywhere_in_a_module() -> None:
    source = '''
from typing import TYPE_CHECKING
from curate.errors import CurateError
if TYPE_CHECKING:
    from curate.workspace import Workspace
def f():
    from curate.stages.dedupe import mark_exact
    import curate.index
    return "from curate.stages.split import x"  # a string is not an import
'''
    assert imports_of("curate.stages.ingest", source) == {
        "curate.errors": 3, "curate.workspace": 5, "curate.stages.dedupe": 7, "curate.index": 8}
    assert imports_of("curate.formats.coco", "from .base import Box\nfrom . import voc\n") == {
        "curate.formats.base": 1, "curate.formats": 2, "curate.formats.voc": 2}
