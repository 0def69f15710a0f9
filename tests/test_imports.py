"""The import graph of `vlalert/`: no circle, and no module importing a stage that comes after its own.

The stages run sources -> gate -> labels -> beliefs -> benchmark -> vlm -> cache -> heads -> metrics
-> score/report, with entry points (predict, cli, workflow) on top and a foundation below them all
(config models, schemas, the results layout, atomic writes, frame folders, video decoding, the tick
grid). A module may import its own stage, an earlier one or the foundation; importing a later stage
would make an early stage depend on code that a later one owns, which is how circles start. Imports
inside functions count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vlalert"

# Foundation: what every stage may import. The `*.config` modules are the config models of each
# stage; the workflow config (vlalert.config) nests them all, and each stage's slice of it
# (vlalert.stage_config) is made of them, so they sit below every stage.
FOUNDATION = (
    "vlalert",
    "vlalert.actions",
    "vlalert.atomic",
    "vlalert.devices",
    "vlalert.strict",
    "vlalert.layout",
    "vlalert.log_lines",
    "vlalert.schemas",
    "vlalert.frame_files",
    "vlalert.video",
    "vlalert.config",
    "vlalert.stage_config",
    "vlalert.download_config",
    "vlalert.ticks",
    "vlalert.splits",
    "vlalert.badas.config",
    "vlalert.badas.windows",
    "vlalert.cache.config",
    "vlalert.frames.config",
    "vlalert.heads.config",
    "vlalert.metrics.config",
    "vlalert.vlm.config",
)
# Stage order: (rank, module prefixes). A module's rank is that of its longest matching prefix.
STAGES: tuple[tuple[int, tuple[str, ...]], ...] = (
    # source_files lists a source's files through its kind's plugin (vlalert.sources.registry)
    (
        1,
        (
            "vlalert.download",
            "vlalert.sources",
            "vlalert.source_files",
            "vlalert.synthetic",
            "vlalert.ingest",
        ),
    ),
    (2, ("vlalert.gate", "vlalert.badas")),
    (3, ("vlalert.labels",)),
    (4, ("vlalert.beliefs",)),
    (5, ("vlalert.benchmark",)),
    # the frames store resizes with the model's resize (vlm.resize) and SFT reads it
    (6, ("vlalert.vlm", "vlalert.frames")),
    (7, ("vlalert.cache",)),
    (8, ("vlalert.heads",)),
    (9, ("vlalert.metrics",)),
    (10, ("vlalert.baselines", "vlalert.score", "vlalert.summary", "vlalert.report")),
    # predict's Predictor is the one inference path; run_package (export-run) and alerter (the Python
    # API) build on it, the CLI on all three
    (
        11,
        (
            "vlalert.predict",
            "vlalert.predict_outputs",
            "vlalert.run_package",
            "vlalert.alerter",
            "vlalert.cli",
            "vlalert.workflow",
        ),
    ),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The vlalert modules `path` imports, anywhere in the file (`from a import b` counts a.b if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in known:
                found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & known
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & known
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def rank(module: str) -> int:
    if module in FOUNDATION:
        return 0
    best = (-1, -1)
    for r, prefixes in STAGES:
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                best = max(best, (len(p), r))
    assert best[1] >= 0, f"{module} is in no stage of this test: add it to FOUNDATION or STAGES"
    return best[1]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
    return found


def test_every_module_has_a_place_in_the_order():
    for name in modules():
        rank(name)


def test_the_import_graph_has_no_circle():
    assert circles(import_graph()) == []


def test_no_module_imports_a_later_stage():
    graph = import_graph()
    against = [
        f"{a} (stage {rank(a)}) imports {b} (stage {rank(b)})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if rank(b) > rank(a)
    ]
    assert against == []


def test_the_checks_can_fail():
    """A circle and a backward edge made up here are found by the same functions."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert rank("vlalert.labels") < rank("vlalert.heads.train")
    assert rank("vlalert.cache.config") == 0 < rank("vlalert.cache.store")
