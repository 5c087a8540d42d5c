"""Colab links from colab.toml: the notebooks agree with it, and the rewriter (make colab-links) is right.

The first test checks the real notebooks; it fails until ``make colab-links`` has been run after colab.toml
or a notebook's setup cell changed. The others run the rewriter on a copy in tmp_path, and execute the setup
cell with Colab faked (subprocess, versions and google.colab.output stand-ins): what it would run there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from simplepo_helpers.course import colab

REPO = Path(__file__).resolve().parents[1]


def test_notebooks_agree_with_colab_toml():
    disagreeing = colab.rewrite_all(REPO, write=False)
    assert disagreeing == {}, f"run `make colab-links`: {disagreeing}"


def copy_repo(tmp_path: Path, repository: str, tag: str) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(
        REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    (root / "colab.toml").write_text(f'repository = "{repository}"\ntag = "{tag}"\n')
    return root


def setup_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(colab.SETUP_MARKER)]


def test_rewriter_points_every_notebook_at_the_configured_repository_and_tag(tmp_path):
    root = copy_repo(tmp_path, "a-course/simplepo-fork", "v9.8.7")
    before = {p.relative_to(root).as_posix(): colab.read_notebook(p) for p in colab.notebook_paths(root)}
    assert colab.main(["--root", str(root)]) == 0
    paths = colab.notebook_paths(root)
    assert len(paths) == len(before) >= 10 and any("solutions" in str(p) for p in paths)
    for path in paths:
        relative = path.relative_to(root).as_posix()
        notebook = colab.read_notebook(path)
        text = path.read_text()
        url = f"https://colab.research.google.com/github/a-course/simplepo-fork/blob/v9.8.7/{relative}"
        assert text.count("colab.research.google.com/github/") == 1 and url in text, relative
        assert (root / relative).is_file()  # the badge's path exists in the repository
        (setup,) = setup_cells(notebook)
        assert notebook.cells.index(setup) == 1 and notebook.cells[0].cell_type == "markdown"
        assert '"--branch",\n                "v9.8.7",' in setup.source
        assert '"https://github.com/a-course/simplepo-fork",' in setup.source
        assert f'os.chdir("/content/simplepo/{Path(relative).parent.as_posix()}")' in setup.source
        assert "simplepo/simplepo" not in text
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # still stripped
        # every other cell is left as it was
        old = [c.source for c in before[relative].cells if not c.source.startswith(colab.SETUP_MARKER)]
        new = [c.source for c in notebook.cells if c is not setup]
        assert len(new) == len(old)
        changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        assert all(colab.BADGE_PATTERN.search(b) for _, b in changed), relative
    assert colab.main(["--root", str(root), "--check"]) == 0  # a second pass finds nothing to do
    assert colab.rewrite_all(root) == {}


def test_check_mode_reports_without_writing(tmp_path, capsys):
    root = copy_repo(tmp_path, "x/y", "v1")
    first = colab.notebook_paths(root)[0]
    original = first.read_bytes()
    assert colab.main(["--root", str(root), "--check"]) == 1
    assert first.read_bytes() == original
    assert "disagree with colab.toml (x/y @ v1)" in capsys.readouterr().out


def test_the_rewritten_setup_cells_pass_the_linter(tmp_path):
    """Each written setup cell, for a long repository name and tag, is ruff-formatted and lint-clean."""
    root = copy_repo(
        tmp_path, "a-very-long-organisation-name/a-rather-long-repository-name", "v12.34.56-rc.1"
    )
    colab.rewrite_all(root)
    cells = tmp_path / "cells"
    cells.mkdir()
    for k, path in enumerate(colab.notebook_paths(root)):
        (setup,) = setup_cells(colab.read_notebook(path))
        (cells / f"setup_{k}.py").write_text(setup.source + "\n")
    config = ["--config", str(REPO / "pyproject.toml")]
    ruff = [sys.executable, "-m", "ruff"]
    for command in (["format", "--check"], ["check"]):
        done = subprocess.run([*ruff, *command, *config, str(cells)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("repository", "tag"), [("no-slash", "v1"), ("a/b/c", "v1"), ("a/b", "bad tag"), ("a/b", "")]
)
def test_bad_colab_toml_values_are_refused(repository, tag):
    with pytest.raises(ValueError, match="colab.toml"):
        colab.ColabTarget(repository, tag)


# ------------------------------------------------------------- the setup cell, run with Colab faked


def run_setup_cell(monkeypatch, tmp_path, versions_before: dict, versions_after: dict):
    """Execute the setup cell with a fake google.colab; return (commands run, custom manager enabled, chdir)."""
    source = colab.read_target(REPO / "colab.toml").setup_cell("notebooks/02_loss_derivation.ipynb")
    calls, state = [], {"installed": False, "manager": False, "chdir": None}
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: state.update(manager=True))
    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    google_colab.output = output
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)

    def fake_run(command, check):
        calls.append(command)
        if "pip" in command:
            state["installed"] = True
        return subprocess.CompletedProcess(command, 0)

    def fake_version(name):
        table = versions_after if state["installed"] else versions_before
        return table.get(name, "1.0")

    import importlib.metadata

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    monkeypatch.setattr("os.path.isdir", lambda path: False)
    monkeypatch.setattr("os.chdir", lambda path: state.update(chdir=path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(source, "setup_cell", "exec"), {})
    return calls, state


def test_setup_cell_on_colab_clones_the_tag_and_keeps_colabs_widgets(monkeypatch, tmp_path):
    import torch

    target = colab.read_target(REPO / "colab.toml")
    versions = {"ipywidgets": "7.7.1", "torch": torch.__version__}
    calls, state = run_setup_cell(monkeypatch, tmp_path, versions, versions)
    clone, install = calls
    assert clone == [
        "git", "clone", "--depth", "1", "--branch", target.tag, f"https://github.com/{target.repository}",
        "/content/simplepo",
    ]  # fmt: skip
    assert install[-3:] == ["-e", "/content/simplepo[learn]", f"torch=={torch.__version__}"]
    assert state["manager"] is False  # Colab's own ipywidgets 7 renders without the custom manager
    assert state["chdir"] == "/content/simplepo/notebooks"


def test_setup_cell_enables_the_custom_widget_manager_for_ipywidgets_8(monkeypatch, tmp_path):
    versions = {"ipywidgets": "8.1.5"}  # already 8 before the install (a runtime that ships 8)
    calls, state = run_setup_cell(monkeypatch, tmp_path, versions, versions)
    assert state["manager"] is True


def test_setup_cell_asks_for_a_restart_when_pip_replaced_an_imported_module(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    with pytest.raises(RuntimeError, match=r"pip changed \['ipywidgets'\]: restart the runtime"):
        run_setup_cell(monkeypatch, tmp_path, {"ipywidgets": "7.7.1"}, {"ipywidgets": "8.1.5"})


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    source = colab.read_target(REPO / "colab.toml").setup_cell("notebooks/01_data_inspection.ipynb")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    cwd = Path.cwd()
    exec(compile(source, "setup_cell", "exec"), {})
    assert Path.cwd() == cwd
