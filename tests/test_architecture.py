"""The package's dependency rule (docs/architecture.md), read from the source with ``ast``.

Layers, each allowed to import the ones listed (and itself):

- ``runtime``: nothing else from the kit;
- ``inputs`` (reading JSONL files, TRL's implicit prompt, the validation report): nothing else from the kit;
- the core (the top-level modules: rows, data, batching, logps, losses, training, reference): runtime, and
  ``fast`` through one door: ``training`` is the only core module that imports it (``packing``, an alias kept
  for old imports, aside);
- ``fast`` (the speed tricks: packed layout, segment attention, fused head): core, runtime;
- ``world``: core, runtime;
- ``evaluation`` (measures, never trains): core except ``training``, runtime, world;
- ``experiments`` (the runs that train and record: sweeps, spread, rounds, ...): core, runtime, world, scale,
  lessons, evaluation;
- ``lessons`` (the profiles every notebook loads first): core, runtime, world, scale, evaluation;
- ``scale``: core, runtime, world, evaluation;
- ``course``: anything. Nothing outside ``course`` imports it.

Every import counts, including those inside functions and ``TYPE_CHECKING`` blocks; the package's
``__init__.py`` (the lazy re-export table) is the one exemption. The imports, all of them, form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "simplepo_helpers"

ALLOWED: dict[str, set[str]] = {
    "runtime": {"runtime"},
    "inputs": {"inputs"},
    "core": {
        "core",
        "fast",
        "inputs",
        "runtime",
    },  # fast: through training only (test_the_fast_path_has_one_door)
    "fast": {"fast", "core", "inputs", "runtime"},
    "world": {"world", "core", "inputs", "runtime"},
    "evaluation": {"evaluation", "world", "core", "inputs", "runtime"},
    "experiments": {"experiments", "lessons", "scale", "evaluation", "world", "core", "inputs", "runtime"},
    "lessons": {"lessons", "scale", "evaluation", "world", "core", "inputs", "runtime"},
    "scale": {"scale", "evaluation", "world", "core", "inputs", "runtime"},
    "course": {
        "course",
        "lessons",
        "scale",
        "experiments",
        "evaluation",
        "world",
        "core",
        "fast",
        "inputs",
        "runtime",
    },
}
# the core modules that may import ``fast``: the door, and the alias kept for ``simplepo_helpers.packing``
FAST_DOORS = {"training", "packing"}
# the core a learner reads in one sitting: every top-level module but the lazy re-export table and the alias
CORE_LINE_BUDGET = 1_500
NOT_READ = {"__init__.py", "packing.py"}


def module_name(path: Path, root: Path) -> str:
    """``pkg.sub.mod`` for ``root/sub/mod.py`` (``pkg.sub`` for a package's ``__init__.py``)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str, package: str) -> str | None:
    """The layer of a module of the package, or None for the package's ``__init__``."""
    parts = module.split(".")
    if parts[0] != package or len(parts) == 1:
        return None
    return parts[1] if parts[1] in ALLOWED and parts[1] != "core" else "core"  # top-level modules: the core


def _resolve(node: ast.ImportFrom, module: str, is_package: bool, root: Path) -> list[str]:
    """Absolute names a ``from ... import ...`` brings in: the module, or its submodules where names are modules."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = []
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        relative = Path(*candidate.split(".")[1:])
        if (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file():
            names.append(candidate)  # ``from . import facts``: the submodule itself
        else:
            names.append(target)
    return names


def kit_imports(path: Path, root: Path) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in the file (inside functions too)."""
    package = root.name
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(node, module, path.name == "__init__.py", root))
    return {name for name in found if name == package or name.startswith(package + ".")}


def violations(root: Path) -> list[str]:
    """Every import that breaks the layer rule, as ``"importer -> imported (layer -> layer)"``."""
    package, found = root.name, []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        importer_layer = layer_of(importer, package)
        if importer_layer is None:
            continue
        for imported in sorted(kit_imports(path, root)):
            imported_layer = layer_of(imported, package)
            if imported_layer is None:
                found.append(f"{importer} -> {imported} (imports the package's lazy __init__)")
            elif imported_layer not in ALLOWED[importer_layer]:
                found.append(f"{importer} -> {imported} ({importer_layer} -> {imported_layer})")
    return found


def fast_importers(root: Path) -> set[str]:
    """Modules outside ``fast`` (the package's lazy ``__init__`` aside) that import from it."""
    package = root.name
    found = set()
    for path in root.rglob("*.py"):
        importer = module_name(path, root)
        if layer_of(importer, package) in (None, "fast"):
            continue
        if any(layer_of(name, package) == "fast" for name in kit_imports(path, root)):
            found.add(importer.removeprefix(package + "."))
    return found


def cycles(root: Path) -> list[list[str]]:
    """Cycles in the graph of every import, those inside functions and ``TYPE_CHECKING`` blocks included (a
    module importing its own package's __init__ aside)."""
    graph = {}
    for path in root.rglob("*.py"):
        module = module_name(path, root)
        parents = {".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 1)}
        graph[module] = kit_imports(path, root) - parents - {module}
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == "open":
                found.append(trail[trail.index(neighbour) :] + [neighbour])
            elif neighbour not in state:
                visit(neighbour, [*trail, neighbour])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def core_lines(root: Path) -> dict[str, int]:
    """Lines of each top-level module of the package (the core), the re-export table and the alias aside."""
    return {
        path.name: len(path.read_text().splitlines())
        for path in sorted(root.glob("*.py"))
        if path.name not in NOT_READ
    }


def test_the_core_fits_its_line_budget():
    lines = core_lines(PACKAGE_ROOT)
    core = {"rows.py", "data.py", "batching.py", "logps.py", "losses.py", "training.py", "precompute.py"}
    assert set(lines) == core
    assert sum(lines.values()) <= CORE_LINE_BUDGET, lines


def test_the_packing_alias_defines_nothing():
    """``packing.py`` is left out of the budget only while it defines nothing (a re-export of fast.packing)."""
    tree = ast.parse((PACKAGE_ROOT / "packing.py").read_text())
    assert all(isinstance(node, (ast.Expr, ast.ImportFrom)) for node in tree.body)


def test_the_budget_counts_every_top_level_module(tmp_path):
    root = _fabricate(
        tmp_path / "fakekit",
        {"training.py": "x = 1\n" * 1400, "extra.py": "y = 2\n" * 101, "packing.py": "from .fast import *\n"},
    )
    assert core_lines(root) == {"extra.py": 101, "training.py": 1400}
    assert sum(core_lines(root).values()) > CORE_LINE_BUDGET


def test_the_package_keeps_its_layers():
    assert violations(PACKAGE_ROOT) == []


def test_imports_have_no_cycle():
    assert cycles(PACKAGE_ROOT) == []


def test_the_fast_path_has_one_door():
    assert fast_importers(PACKAGE_ROOT) <= FAST_DOORS


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PACKAGE_ROOT.glob("*/__init__.py")}
    assert subpackages == set(ALLOWED) - {"core"}


def _fabricate(root: Path, files: dict[str, str]) -> Path:
    for name, text in {
        "__init__.py": "",
        "course/__init__.py": "",
        "runtime/__init__.py": "",
        **files,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"losses.py": "from .course import widgets\n", "course/widgets.py": ""},
            "fakekit.losses -> fakekit.course.widgets (core -> course)",
        ),
        (
            {"losses.py": "def f():\n    from .course.widgets import Browser\n", "course/widgets.py": ""},
            "fakekit.losses -> fakekit.course.widgets (core -> course)",
        ),
        (
            {"runtime/optim.py": "from ..training import train\n", "training.py": ""},
            "fakekit.runtime.optim -> fakekit.training (runtime -> core)",
        ),
        ({"training.py": "import fakekit.course\n"}, "fakekit.training -> fakekit.course (core -> course)"),
    ],
)
def test_the_checker_catches_a_core_module_importing_course_tooling(tmp_path, files, expected):
    root = _fabricate(tmp_path / "fakekit", files)
    assert violations(root) == [expected]


def test_the_checker_allows_what_the_rule_allows_and_finds_cycles(tmp_path):
    root = _fabricate(
        tmp_path / "fakekit",
        {
            "course/check.py": "from ..training import train\n",
            "training.py": "from .runtime import optim\n",
            "runtime/optim.py": "",
            "a.py": "from .b import x\n",
            "b.py": "from . import a\n",
        },
    )
    assert violations(root) == []
    assert cycles(root) == [["fakekit.a", "fakekit.b", "fakekit.a"]]


def test_the_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    root = _fabricate(
        tmp_path / "fakekit",
        {
            "evaluation/__init__.py": "",
            "evaluation/report.py": "from .results import table\n",
            "evaluation/results.py": "def render():\n    from .report import final\n",
        },
    )
    assert violations(root) == []
    assert cycles(root) == [
        ["fakekit.evaluation.report", "fakekit.evaluation.results", "fakekit.evaluation.report"]
    ]


def test_the_checker_finds_a_second_door_to_the_fast_path(tmp_path):
    root = _fabricate(
        tmp_path / "fakekit",
        {"fast/__init__.py": "", "training.py": "from . import fast\n", "losses.py": "from .fast import x\n"},
    )
    assert fast_importers(root) == {"training", "losses"}


def test_evaluation_never_trains():
    """``evaluation`` measures; the modules that train (they call ``train``) live in ``experiments``."""
    package = PACKAGE_ROOT.name
    trainers = {
        module_name(path, PACKAGE_ROOT)
        for path in (PACKAGE_ROOT / "evaluation").rglob("*.py")
        if f"{package}.training" in kit_imports(path, PACKAGE_ROOT)
    }
    assert trainers == set()


def test_moved_modules_keep_their_old_import_paths():
    import simplepo_helpers
    from simplepo_helpers.evaluation import spread as old
    from simplepo_helpers.experiments import spread as new

    assert old is new
    for old_name, new_name in simplepo_helpers._MOVED.items():
        assert not (PACKAGE_ROOT / (old_name.replace(".", "/") + ".py")).exists(), old_name
        assert (PACKAGE_ROOT / (new_name.replace(".", "/") + ".py")).is_file(), new_name


def test_the_profiles_old_module_path_still_imports():
    """``scale.profiles`` moved to ``lessons.profiles``: the old path gives the very same module."""
    import simplepo_helpers.lessons.profiles as new
    import simplepo_helpers.scale.profiles as old

    assert old is new and old.load_profile is new.load_profile


@pytest.mark.parametrize(
    "old, new",
    [("runtime.result", "runtime.train_result"), ("runtime.batches", "runtime.batch_order")],
)
def test_renamed_runtime_modules_still_import_by_their_old_names(old, new):
    import importlib

    assert importlib.import_module(f"simplepo_helpers.{old}") is importlib.import_module(
        f"simplepo_helpers.{new}"
    )


def test_the_fused_module_still_imports_by_its_old_name():
    """``fast/fused.py`` (the chunked log-softmax and the fused head) joined ``fast/packing.py``: the old path
    gives the very same module, its private autograd functions included."""
    from simplepo_helpers.fast import fused, packing
    from simplepo_helpers.fast.fused import _HeadLabelLogps, chunked_token_logps

    assert fused is packing and _HeadLabelLogps is packing._HeadLabelLogps
    assert chunked_token_logps is packing.chunked_token_logps
