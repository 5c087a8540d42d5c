"""Colab links from colab.toml: the notebooks agree with it, and the rewriter (make colab-links) is right.

The first test checks the real notebooks (and each notebook folder's colab_setup.ipy); it fails until
``make colab-links`` has been run after colab.toml or the setup cell's template changed. The others run the
rewriter on a copy in tmp_path, and execute the setup cell in a real IPython shell (its own process, so its
``!`` line runs through /bin/sh and sets ``_exit_code``, and its ``%run`` is IPython's) with Colab faked:
a google.colab stand-in, a git on PATH, pip and package versions.
"""

from __future__ import annotations

import json
import os
import re
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
        assert "--branch v9.8.7 https://github.com/a-course/simplepo-fork /content/simplepo" in setup.source
        assert (
            "at tag v9.8.7" in setup.source and "https://github.com/a-course/simplepo-fork at" in setup.source
        )
        folder = Path(relative).parent.as_posix()
        assert setup.source.endswith(f"\n    %run /content/simplepo/{folder}/{colab.SETUP_SCRIPT}")
        script = (root / folder / colab.SETUP_SCRIPT).read_text()
        assert f'setup_colab("{folder}", clone="/content/simplepo")' in script
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
    """The rewritten notebooks, for a long repository name and tag, are ruff-formatted and lint-clean as
    notebooks (ruff reads the cell's ``!`` and ``%run`` lines as IPython), and the cell stays short."""
    root = copy_repo(
        tmp_path, "a-very-long-organisation-name/a-rather-long-repository-name", "v12.34.56-rc.1"
    )
    colab.rewrite_all(root)
    for path in colab.notebook_paths(root):
        (setup,) = setup_cells(colab.read_notebook(path))
        assert len(nonblank(setup.source)) <= MAX_SETUP_LINES, path.name
    config = ["--config", str(REPO / "pyproject.toml")]
    ruff = [sys.executable, "-m", "ruff"]
    for command in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [*ruff, *command, *config, str(root / "notebooks")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("repository", "tag"), [("no-slash", "v1"), ("a/b/c", "v1"), ("a/b", "bad tag"), ("a/b", "")]
)
def test_bad_colab_toml_values_are_refused(repository, tag):
    with pytest.raises(ValueError, match="colab.toml"):
        colab.ColabTarget(repository, tag)


# ------------------------------------------------------------- the setup cell, run with Colab faked

MAX_SETUP_LINES = 6  # see test_the_setup_cell_is_short


def nonblank(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip()]


def test_the_setup_cell_is_short_clone_first_then_one_call_into_the_kit():
    """What a learner sees: a header, the clone (with its one-sentence failure), then one call into the kit.

    Everything else (torch floor, pip, restart notice, widgets, folder) is `colab.setup_colab`, which the
    ``%run`` of the folder's colab_setup.ipy calls, tested below.
    """
    for path in colab.notebook_paths(REPO):
        (setup,) = setup_cells(colab.read_notebook(path))
        lines = nonblank(setup.source)
        assert len(lines) <= MAX_SETUP_LINES, (path.name, len(lines))
        code = [line.strip() for line in lines if not line.lstrip().startswith("#")]
        clone = next(i for i, line in enumerate(code) if "git clone" in line)
        assert code[clone].startswith("!test -d /content/simplepo || GIT_TERMINAL_PROMPT=0 git clone ")
        assert code[clone + 1].startswith("assert _exit_code == 0, ")  # the clone's failure, right after it
        folder = path.parent.relative_to(REPO).as_posix()
        assert code[-1] == f"%run /content/simplepo/{folder}/{colab.SETUP_SCRIPT}"  # the kit's one call last
        assert clone < len(code) - 1 and sum("%run" in line for line in code) == 1
        assert "pip" not in setup.source and "setup_colab" not in setup.source


# The setup cell in a real IPython shell, in a process of its own: google.colab faked (a module whose
# output.enable_custom_widget_manager records the call), pip faked (subprocess.run, as setup_colab calls it)
# and the package versions pip would see faked; `!` and `%run` are IPython's own. Colab's shell replaces
# IPython's `system` with its own, which also sets `_exit_code` in the user namespace
# (google/colab/_system_commands.py, `_system_compat`), so IPython's is a faithful stand-in.
IPYTHON_DRIVER = """
import importlib.metadata, json, os, subprocess, sys, types

config = json.loads(sys.argv[1])
state = {"widget manager": False, "pip": []}
if config["colab"]:
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: state.update({"widget manager": True})
    google, google_colab = types.ModuleType("google"), types.ModuleType("google.colab")
    google.colab, google_colab.output = google_colab, output
    sys.modules.update({"google": google, "google.colab": google_colab, "google.colab.output": output})
real_run, real_version = subprocess.run, importlib.metadata.version


def fake_run(command, *args, **kwargs):
    if isinstance(command, list) and command[1:3] == ["-m", "pip"]:
        state["pip"].append(command)
        return subprocess.CompletedProcess(command, 0, "", "")
    return real_run(command, *args, **kwargs)


subprocess.run = fake_run
importlib.metadata.version = lambda name: config["versions"].get(name) or real_version(name)
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
results = [shell.run_cell(config["cell"]) for _ in range(config["runs"])]
errors = [r.error_before_exec or r.error_in_exec for r in results]
state.update(
    success=[r.success for r in results],
    errors=[type(e).__name__ if e else None for e in errors],
    messages=[str(e) if e else None for e in errors],
    exit_code=shell.user_ns.get("_exit_code"),
    cwd=os.getcwd(),
    path=sys.path[:3],
)
with open(config["report"], "w") as handle:
    json.dump(state, handle)
"""


@pytest.fixture
def published(tmp_path):
    """A stand-in for the published repository (what `git clone` brings: the kit, pyproject.toml and each
    notebook folder's colab_setup.ipy, written for a clone into tmp_path/clone) and a git on PATH that
    records how it was called and then clones it (``FAKE_GIT=refuse``: fails as GitHub does for a missing
    repository or tag when git may not prompt)."""
    clone = tmp_path / "clone"
    remote = tmp_path / "remote"
    for folder in ("notebooks", "notebooks/solutions"):
        (remote / folder).mkdir(parents=True)
        (remote / folder / colab.SETUP_SCRIPT).write_text(colab.setup_script(folder, clone=str(clone)))
    shutil.copy(REPO / "pyproject.toml", remote / "pyproject.toml")
    (remote / "simplepo_helpers").symlink_to(REPO / "simplepo_helpers")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "git-calls"
    (fake_bin / "git").write_text(
        "#!/bin/sh\n"
        f'echo "prompt=$GIT_TERMINAL_PROMPT args=$*" >> {record}\n'
        'if [ "$FAKE_GIT" = refuse ]; then\n'
        "  echo \"fatal: could not read Username for 'https://github.com': terminal prompts disabled\" >&2\n"
        "  exit 128\n"
        "fi\n"
        "for destination; do :; done\n"
        f'cp -R {remote} "$destination"\n'
    )
    (fake_bin / "git").chmod(0o755)
    return types.SimpleNamespace(clone=clone, bin=fake_bin, record=record, tmp=tmp_path)


def run_in_ipython(
    published, notebook: str, *, colab_here=True, refuse=False, torch="2.11.0+cu126", runs=1
) -> dict:
    """Run ``notebook``'s setup cell (cloning into ``published.clone``) in a fresh IPython shell."""
    target = colab.read_target(REPO / "colab.toml")
    report = published.tmp / "report.json"
    config = {
        "cell": target.setup_cell(notebook, clone=str(published.clone)),
        "colab": colab_here,
        "versions": {"torch": torch, "ipywidgets": "7.7.1"},
        "runs": runs,
        "report": str(report),
    }
    env = {
        **os.environ,
        "PATH": f"{published.bin}:{os.environ['PATH']}",
        "FAKE_GIT": "refuse" if refuse else "",
        "IPYTHONDIR": str(published.tmp / "ipython"),  # its history and profile stay in tmp_path
    }
    done = subprocess.run(
        [sys.executable, "-c", IPYTHON_DRIVER, json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=published.tmp,
        timeout=120,
    )
    assert done.returncode == 0 and report.is_file(), done.stdout + done.stderr
    state = json.loads(report.read_text())
    state["output"] = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # colours off
    state["git"] = published.record.read_text().splitlines() if published.record.exists() else []
    return state


@pytest.mark.parametrize(
    ("notebook", "folder"),
    [
        ("notebooks/02_loss_derivation.ipynb", "notebooks"),
        ("notebooks/solutions/06_lora_solutions.ipynb", "notebooks/solutions"),
    ],
)
def test_setup_cell_on_colab_clones_the_tag_without_prompting_then_calls_the_kit_once(
    published, notebook, folder
):
    target = colab.read_target(REPO / "colab.toml")
    state = run_in_ipython(published, notebook, runs=2)
    assert state["success"] == [True, True] and state["exit_code"] == 0, state["output"]
    clone = str(published.clone)
    # cloned once, at the tag, with git's prompt off; the second run finds the clone and goes on
    assert state["git"] == [
        f"prompt=0 args=clone -q --depth 1 --branch {target.tag} https://github.com/{target.repository} {clone}"
    ]
    # setup_colab ran in the kernel's process: pip (keeping Colab's torch), sys.path, the notebook's folder
    assert state["pip"][0][-3:] == ["-e", f"{clone}[learn]", "torch==2.11.0+cu126"] and len(state["pip"]) == 2
    assert state["path"][0] == clone and state["path"].count(clone) == 1
    assert state["cwd"] == f"{clone}/{folder}"
    assert state["widget manager"] is False  # Colab's own ipywidgets 7 renders without it


def test_setup_cell_says_in_one_sentence_when_the_repository_or_tag_is_not_reachable(published):
    """Through a real /bin/sh, a git that fails as GitHub does for a missing repository or tag (told not
    to prompt): the cell stops with the one sentence, and nothing of the kit runs."""
    target = colab.read_target(REPO / "colab.toml")
    state = run_in_ipython(published, "notebooks/03_simpo_training.ipynb", refuse=True)
    assert state["success"] == [False] and state["errors"] == ["AssertionError"]
    (message,) = state["messages"]
    assert message == colab.clone_failed_message(target.repository, target.tag)
    assert f"https://github.com/{target.repository} at tag {target.tag}" in message
    assert "may not be published yet" in message and "open the notebook from the badge" in message
    assert "\n" not in message and message.count(". ") == 0  # one sentence
    assert f"AssertionError: {message}" in state["output"]
    assert state["exit_code"] == 128 and state["git"][0].startswith(
        f"prompt=0 args=clone -q --depth 1 --branch {target.tag} "
    )
    assert state["pip"] == [] and not published.clone.exists()  # nothing after the failed clone
    assert state["cwd"] == str(published.tmp)


def test_setup_cell_stops_with_the_kits_sentence_when_colabs_torch_is_below_the_floor(published):
    """The kit's failures reach the cell: %run re-raises the .ipy's error, so the cell (and Run all) stops."""
    state = run_in_ipython(published, "notebooks/01_data_inspection.ipynb", torch="2.10.0+cu121")
    assert state["success"] == [False] and state["errors"] == ["ColabSetupError"], state["output"]
    (message,) = state["messages"]
    assert message.startswith("Colab's torch 2.10.0+cu121 is older than the kit's floor (torch>=2.11): ")
    assert "\n" not in message and f"ColabSetupError: {message}" in state["output"]
    assert state["pip"] == [] and state["cwd"] == str(published.tmp)  # before pip, and stayed put


def test_setup_cell_does_nothing_outside_colab(published):
    state = run_in_ipython(published, "notebooks/01_data_inspection.ipynb", colab_here=False)
    assert state["success"] == [True] and state["exit_code"] is None, state["output"]
    assert state["git"] == [] and state["pip"] == [] and state["cwd"] == str(published.tmp)
    assert str(published.clone) not in state["path"]


# ----------------------------------------------------------------- colab.setup_colab, with Colab faked


@pytest.fixture
def clone(tmp_path):
    """A stand-in for /content/simplepo: the real pyproject.toml and a notebooks folder."""
    root = tmp_path / "simplepo"
    (root / "notebooks" / "solutions").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def fake_colab(
    monkeypatch, versions_before: dict, versions_after: dict | None = None, pip_returncode=0, pip_stderr=""
):
    """Fake google.colab, pip (subprocess.run), package versions and chdir; return the record of calls."""
    versions_after = versions_before if versions_after is None else versions_after
    state = {"installed": False, "manager": False, "chdir": None, "commands": []}
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: state.update(manager=True))
    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    google_colab.output = output
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)

    def fake_run(command, **kwargs):
        state["commands"].append(command)
        state["installed"] = pip_returncode == 0
        return subprocess.CompletedProcess(command, pip_returncode, "", pip_stderr)

    def fake_version(name):
        table = versions_after if state["installed"] else versions_before
        return table.get(name, "1.0")

    import importlib.metadata

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    monkeypatch.setattr("os.chdir", lambda path: state.update(chdir=path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return state


def test_setup_colab_installs_the_learn_extra_keeping_colabs_torch_and_widgets(monkeypatch, clone):
    state = fake_colab(monkeypatch, {"torch": "2.11.0+cu126", "ipywidgets": "7.7.1"})
    done = colab.setup_colab("notebooks/solutions", clone=str(clone))
    (pip,) = state["commands"]
    assert pip[:4] == [sys.executable, "-m", "pip", "install"]
    assert pip[-3:] == ["-e", f"{clone}[learn]", "torch==2.11.0+cu126"]  # Colab's CUDA build kept
    assert state["manager"] is False  # Colab's own ipywidgets 7 renders without the custom manager
    assert state["chdir"] == f"{clone}/notebooks/solutions" and sys.path[0] == str(clone)
    assert len(done) == 2


def test_setup_colab_enables_the_custom_widget_manager_for_ipywidgets_8(monkeypatch, clone):
    state = fake_colab(monkeypatch, {"torch": "2.13.0", "ipywidgets": "8.1.5"})
    colab.setup_colab(clone=str(clone))
    assert state["manager"] is True


def test_setup_colab_asks_for_a_restart_when_pip_replaced_an_imported_module(monkeypatch, clone):
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    fake_colab(
        monkeypatch, {"torch": "2.11.0", "ipywidgets": "7.7.1"}, {"torch": "2.11.0", "ipywidgets": "8.1.5"}
    )
    with pytest.raises(colab.ColabSetupError, match=r"pip changed \['ipywidgets'\]: restart the runtime"):
        colab.setup_colab(clone=str(clone))


@pytest.mark.parametrize("old", ["2.10.0+cu121", "2.9.1", "1.13.0"])
def test_setup_colab_refuses_a_torch_below_the_floor_in_one_sentence_before_pip(monkeypatch, clone, old):
    state = fake_colab(monkeypatch, {"torch": old, "ipywidgets": "7.7.1"})
    with pytest.raises(colab.ColabSetupError) as raised:
        colab.setup_colab(clone=str(clone))
    message = str(raised.value)
    assert message.startswith(f"Colab's torch {old} is older than the kit's floor (torch>=2.11): ")
    assert "Runtime > Change runtime type" in message and "\n" not in message and ". " not in message
    assert state["commands"] == []  # pip never ran, so no impossible resolution and no CalledProcessError


def test_setup_colab_reports_a_pip_failure_in_one_sentence(monkeypatch, clone):
    stderr = "  error: subprocess-exited-with-error\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io\n"
    fake_colab(monkeypatch, {"torch": "2.11.0", "ipywidgets": "7.7.1"}, pip_returncode=1, pip_stderr=stderr)
    with pytest.raises(colab.ColabSetupError) as raised:
        colab.setup_colab(clone=str(clone))
    message = str(raised.value)
    assert "pip could not install the kit" in message and "ERROR: ResolutionImpossible" in message
    assert "\n" not in message and not isinstance(raised.value, subprocess.CalledProcessError)


def test_setup_colab_does_nothing_outside_colab(monkeypatch, clone):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    assert colab.setup_colab(clone=str(clone)) == []


def test_torch_floor_is_read_from_pyproject_and_compared_by_release():
    assert colab.torch_floor(REPO / "pyproject.toml") == "2.11"
    assert colab._at_least("2.11.0+cu126", "2.11") and colab._at_least("2.13.0", "2.11")
    assert not colab._at_least("2.10.2", "2.11") and not colab._at_least("2.1", "2.11")


def test_the_setup_path_needs_only_the_standard_library():
    """Colab imports the kit's colab module from the clone before installing anything: no nbformat."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('nbformat', 'torch', 'numpy'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from simplepo_helpers.course.colab import setup_colab, clone_failed_message\n"
        "print(setup_colab())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_the_publishing_checklist_is_linked_and_in_order():
    """docs/publishing.md: create the repository, colab.toml, make colab-links, tag, push, open every badge."""
    text = (REPO / "docs" / "publishing.md").read_text()
    steps = [
        "**Create the repository**",
        "**Set `colab.toml`**",
        "**Run `make colab-links`**",
        "**Tag**",
        "**Push**",
        "**Open every badge once**",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "GIT_TERMINAL_PROMPT=0" in text and "--check" in text
    # the cell it quotes is the one make colab-links writes (for its placeholder repository and tag)
    quoted = colab.ColabTarget("OWNER/NAME", "vX.Y.Z").setup_cell("notebooks/01_data_inspection.ipynb")
    assert f"```python\n{quoted}\n```" in text
    assert "(docs/publishing.md)" in (REPO / "README.md").read_text()
    target = colab.read_target(REPO / "colab.toml")
    assert "docs/publishing.md" in colab.clone_failed_message(target.repository, target.tag)
