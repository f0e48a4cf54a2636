"""Imports point down only: every `refine` module sits on a floor, and imports only its own floor
or the floors below it, counting imports inside functions (a lazy import may not hide an upward
edge), and no two modules import each other in a cycle. By package, `refine.eval` stands above
`refine.train`: neither the trainers nor anything below them import a module of `refine.eval`, its
config module included (the whole-study check `refine.study` is the one named exception).

The floors, bottom to top (a module belongs to the floor of the longest prefix that names it;
a package `refine/x/` is the modules below it, whatever their number):

 0. names       `refine.names` (the name lists: stages, methods, suites, architectures, TTT modes),
                `refine.registry` (the by-name registry helper); both import nothing of the package
 1. config      `refine.config` (generic loading: YAML, schema, dataclass building),
                `refine.tracking` (the tracking interface; imports nothing of the package)
 2. data        `refine.data` (corpora, tokenizers, RULER generators, LongBench's task table)
 3. models      `refine.models` (ops, layers, model classes, registry)
 4. rl          `refine.rl` (positions, rewards, advantages, losses, sampling; `RefineConfig`)
 5. configs     the per-concern dataclasses above rl: `refine.train.config`, `refine.eval.config`
 6. study       `refine.study`: the whole-study check that puts the per-concern configs together
                (below the trainers: the memory estimator's command line validates a study)
 7. train       `refine.train` (the loop, methods, TTT, memory estimator, checkpoints)
 8. report      `refine.report` building blocks (tables, figures, NTP table) that the suites lay
                their tables and figures out with
 9. eval        `refine.eval` (decoding, suites, scoring, LongBench readers and metrics)
10. hub         `refine.hub` (hub-shaped model directories and model cards, with the suites' scores)
11. stages      the stage runners `refine.train.run` and `refine.eval.run` (they write model cards)
12. commands    `refine.report.cli` and `refine.report.differences` (read the suite registry),
                `refine.cli`, `refine.bench`, `refine.rehearsal`, and the package `refine` itself
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "refine"

FLOORS: list[tuple[str, ...]] = [
    ("refine.names", "refine.registry"),
    ("refine.config", "refine.tracking"),
    ("refine.data",),
    ("refine.models",),
    ("refine.rl",),
    ("refine.train.config", "refine.eval.config"),
    ("refine.study",),
    ("refine.train",),
    ("refine.report",),
    ("refine.eval",),
    ("refine.hub",),
    ("refine.train.run", "refine.eval.run"),
    ("refine.report.cli", "refine.report.differences", "refine.cli", "refine.bench", "refine.rehearsal", "refine"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The `refine` modules `path` (module `name`) imports anywhere in its body, functions included:
    `from a.b import c` counts `a.b.c` when that is a module, else `a.b`."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m == "refine" or m.startswith("refine.")}


def floor(name: str) -> int:
    best, best_len = None, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            below = name.startswith(prefix + ".") and prefix != "refine"  # the package: its __init__ only
            if (name == prefix or below) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    assert best is not None, f"{name}: on no floor; add it to FLOORS in tests/test_layers.py"
    return best


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(path, name, known) for name, path in mods.items()}


def test_every_module_is_on_a_floor():
    for name in modules():
        floor(name)


def test_imports_point_down_only():
    upward = []
    for name, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            if target != name and floor(target) > floor(name):
                upward.append(f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})")
    assert upward == [], "\n".join(upward)


# The one edge into `refine.eval` from at or below the trainers: the whole-study check puts the
# evaluation sections' dataclasses together with the others (it sits below the trainers because the
# memory estimator's command line validates a study). Their home stays `refine.eval.config`.
EVAL_IMPORTS_ALLOWED_BELOW_EVAL = {("refine.study", "refine.eval.config")}


def test_train_and_what_lies_below_it_import_nothing_of_eval():
    """`refine.eval` (its config module included) stands above `refine.train`: no module of
    `refine.train` (the stage runner too) and no module on a floor below the trainers' imports a
    module of `refine.eval`, but for the edges of EVAL_IMPORTS_ALLOWED_BELOW_EVAL (each of which
    must still exist, so a stale exception fails too)."""
    graph = import_graph()
    train = floor("refine.train")
    found = set()
    for name, targets in graph.items():
        if name == "refine.eval" or name.startswith("refine.eval."):
            continue
        if name == "refine.train" or name.startswith("refine.train.") or floor(name) < train:
            found |= {(name, t) for t in targets if t == "refine.eval" or t.startswith("refine.eval.")}
    upward = sorted(found - EVAL_IMPORTS_ALLOWED_BELOW_EVAL)
    assert upward == [], "\n".join(f"{a} imports {b}" for a, b in upward)
    assert EVAL_IMPORTS_ALLOWED_BELOW_EVAL <= found, sorted(EVAL_IMPORTS_ALLOWED_BELOW_EVAL - found)


def test_no_import_cycles():
    """No cycle among modules (a submodule importing its own package's `__init__`, which re-exports
    it, is the one allowed back edge: Python resolves it by the time the submodule runs)."""
    graph = import_graph()
    edges = {m: {t for t in ts if t in graph and t != m and not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "\n".join(cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser counts an import inside a function and resolves a relative one."""
    pkg = tmp_path / "refine" / "sub"
    pkg.mkdir(parents=True)
    module = pkg / "mod.py"
    module.write_text("def f():\n    from refine.study import validate_config\n    from . import other\n")
    found = imported(module, "refine.sub.mod", {"refine.sub.other", "refine.study"})
    assert found == {"refine.study", "refine.sub.other"}


def test_the_longbench_table_on_the_data_floor_matches_the_metrics():
    """The task table moved to `refine.data.longbench_spec` names each task's metric; the functions
    stay in `refine.eval.longbench_metrics`: the two tables agree task by task."""
    from refine.data.longbench_spec import DATASET_TO_METRIC_NAME, TASKS
    from refine.eval.longbench_metrics import DATASET_TO_METRIC

    assert {t: f.__name__ for t, f in DATASET_TO_METRIC.items()} == DATASET_TO_METRIC_NAME
    assert set(TASKS) == set(DATASET_TO_METRIC)
