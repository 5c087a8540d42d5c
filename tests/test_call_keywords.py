"""Every keyword the kit passes to one of its own functions is a parameter of that function.

A renamed parameter (``average`` -> ``length_normalize``) leaves callers that only long experiments reach: the
over-optimisation run's DPO precompute kept ``average=`` and failed 40 minutes into ``make spread``. This reads
the package and the benchmarks (``ast``, nothing imported or run) and checks each call of a function whose name
the kit defines exactly once (methods included, so a shared name such as ``summary`` is left out)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "simplepo_helpers").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))


def _functions(trees: dict[Path, ast.Module]) -> dict[str, list[ast.FunctionDef]]:
    found: dict[str, list[ast.FunctionDef]] = defaultdict(list)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found[node.name].append(node)
    return found


def _kit_names(tree: ast.Module) -> set[str]:
    """Names a file binds to the kit: what it imports from the kit (functions or modules), what it defines."""
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("simplepo_")):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def _called_name(call: ast.Call, kit: set[str]) -> str | None:
    """The kit function a call names: ``f(...)`` with ``f`` a kit name, or ``module.f(...)`` with ``module`` a
    kit module (``fast.packed_sequence_logps``); None for anything else (``torch.load``, ``model(...)``)."""
    if isinstance(call.func, ast.Name):
        return call.func.id if call.func.id in kit else None
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in kit:
        return func.attr
    return None


def unknown_keywords(trees: dict[Path, ast.Module]) -> list[str]:
    """``file:line name(keyword=)`` for each keyword that the called kit function does not take."""
    unique = {name: nodes[0] for name, nodes in _functions(trees).items() if len(nodes) == 1}
    problems = []
    for path, tree in trees.items():
        kit = _kit_names(tree)
        for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
            function = unique.get(_called_name(call, kit) or "")
            if function is None or function.args.kwarg is not None:
                continue
            a = function.args
            accepted = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}
            problems += [
                f"{path.relative_to(REPO)}:{call.lineno} {function.name}({kw.arg}=)"
                for kw in call.keywords
                if kw.arg is not None and kw.arg not in accepted
            ]
    return problems


def test_every_keyword_the_kit_passes_to_its_own_functions_exists():
    trees = {path: ast.parse(path.read_text(), str(path)) for path in SOURCES}
    assert unknown_keywords(trees) == []


def test_the_check_catches_a_renamed_parameter():
    """The bug it was written for, on a fabricated module: a caller still passing the old name."""
    source = (
        "def precompute(model, *, length_normalize=False):\n    return model\n\n"
        "def caller(model):\n    return precompute(model, average=True)\n"
    )
    problems = unknown_keywords({REPO / "fabricated.py": ast.parse(source)})
    assert problems == ["fabricated.py:5 precompute(average=)"]
