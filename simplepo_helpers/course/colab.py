"""Colab links from one place: ``colab.toml`` (repository and release tag) -> every notebook's badge and setup cell.

    python -m simplepo_helpers.course.colab            # rewrite the notebooks (make colab-links)
    python -m simplepo_helpers.course.colab --check    # exit 1 and list what disagrees

Each notebook gets an "Open In Colab" badge pointing at its own path at the tag, and one setup cell (the
first code cell, ``SETUP_MARKER`` first) of at most 6 lines. On Colab it clones the repository at the tag
with IPython's ``!`` (git's password prompt off, so a missing repository or tag fails at once), stops with
one sentence when the clone failed (``!`` leaves the command's exit status in ``_exit_code``, IPython's and
Colab's alike), then makes one call into the kit: ``%run`` of ``colab_setup.ipy`` in the notebook's folder
of the clone (written here too, ``SETUP_SCRIPT_TEMPLATE``), which puts the clone on ``sys.path`` and calls
`setup_colab`: it checks Colab's torch against the kit's floor, installs the clone with its ``learn``
extra keeping Colab's torch (and Colab's ipywidgets 7.x, which the kit accepts), says when pip replaced a
module the process had already imported (restart the runtime then), turns on Colab's custom widget manager
when ipywidgets 8 is installed (Colab renders 8.x widgets only through it) and changes to the notebook's
folder. The script is a ``.ipy``, not a ``.py``: ``%run`` re-raises an error of a ``.ipy`` (so the cell
stops and Run all stops with it) but only prints one of a ``.py`` (ipython/ipython#12291); IPython then
shows the error twice, for the script and for the cell, both ending in the same sentence. Outside Colab
the cell does nothing. nbformat is imported only by the rewriter, so the setup path needs nothing beyond
the standard library.
Solutions notebooks without a setup cell or a badge get them. Only cells and scripts that change are
touched.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "colab.toml"
CLONE_DIR = "/content/simplepo"
SETUP_MARKER = "# Colab only:"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_PATTERN = re.compile(
    r"\[!\[Open In Colab\]\("
    + re.escape(BADGE_IMAGE)
    + r"\)\]\(https://colab\.research\.google\.com/github/[^)\s]*\)"
)
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

SETUP_SCRIPT = "colab_setup.ipy"  # in each notebook folder; what the setup cell runs after the clone

SETUP_TEMPLATE = """\
# Colab only: clone the kit at its release tag, then one call installs it and checks the rest (no-op elsewhere).
import sys

if "google.colab" in sys.modules:
    !test -d __CLONE__ || GIT_TERMINAL_PROMPT=0 git clone -q --depth 1 --branch __TAG__ https://github.com/__REPOSITORY__ __CLONE__
    assert _exit_code == 0, __CLONE_FAILED__  # noqa: F821  # fmt: skip
    %run __CLONE__/__FOLDER__/__SCRIPT__
"""
# `_exit_code`: the exit status of the `!` line before it (IPython's `system`, and Colab's, set it in the
# user namespace); `# fmt: skip` keeps the sentence on one line whatever the repository's and tag's length.

SETUP_SCRIPT_TEMPLATE = """\
# The Colab setup cell of the notebooks in this folder runs this (%run) once it has cloned the kit: with the
# clone on sys.path, setup_colab checks Colab's torch against the kit's floor, installs the kit with its learn
# extra, turns on Colab's widget manager for ipywidgets 8 and moves into this folder. Written by
# `make colab-links` (simplepo_helpers/course/colab.py). A .ipy, not a .py: %run re-raises an error of a .ipy,
# so the setup cell stops with its one sentence, where it would only print one of a .py and Run all go on.
import sys

if "__CLONE__" not in sys.path:
    sys.path.insert(0, "__CLONE__")
from simplepo_helpers.course.colab import setup_colab

setup_colab("__FOLDER__", clone="__CLONE__")
"""


def clone_failed_message(repository: str, tag: str) -> str:
    """The one sentence the setup cell raises when ``git clone`` of ``repository`` at ``tag`` fails."""
    return (
        f"Could not clone https://github.com/{repository} at tag {tag}: the repository or the tag is not "
        "reachable (the release may not be published yet); open the notebook from the badge of a published "
        "release, or ask whoever shared it to publish it (docs/publishing.md)"
    )


@dataclass(frozen=True)
class ColabTarget:
    """The repository (``owner/name``) and release tag that badges and clones point at."""

    repository: str
    tag: str

    def __post_init__(self) -> None:
        if not REPOSITORY_PATTERN.match(self.repository):
            raise ValueError(f"colab.toml: repository must look like owner/name, got {self.repository!r}")
        if not TAG_PATTERN.match(self.tag):
            raise ValueError(f"colab.toml: tag must be a git tag name, got {self.tag!r}")

    def badge(self, notebook: str) -> str:
        """The badge markdown for ``notebook`` (a path from the repository root, e.g. notebooks/01_x.ipynb)."""
        url = f"https://colab.research.google.com/github/{self.repository}/blob/{self.tag}/{notebook}"
        return f"[![Open In Colab]({BADGE_IMAGE})]({url})"

    def setup_cell(self, notebook: str, *, clone: str = CLONE_DIR) -> str:
        """The setup cell's source for ``notebook``: clone at the tag into ``clone``, then %run its folder's
        setup script (install, checks, chdir to the folder)."""
        folder = str(Path(notebook).parent.as_posix())
        return (
            SETUP_TEMPLATE.replace(
                "__CLONE_FAILED__", json.dumps(clone_failed_message(self.repository, self.tag))
            )
            .replace("__CLONE__", clone)
            .replace("__TAG__", self.tag)
            .replace("__REPOSITORY__", self.repository)
            .replace("__FOLDER__", folder)
            .replace("__SCRIPT__", SETUP_SCRIPT)
            .rstrip("\n")
        )


def setup_script(folder: str, *, clone: str = CLONE_DIR) -> str:
    """The text of ``folder``'s ``colab_setup.ipy`` (``folder`` from the repository root, e.g. notebooks)."""
    return SETUP_SCRIPT_TEMPLATE.replace("__CLONE__", clone).replace("__FOLDER__", folder)


def read_target(path: str | Path = CONFIG) -> ColabTarget:
    """``colab.toml`` as a ColabTarget (both keys required)."""
    with Path(path).open("rb") as handle:
        raw = tomllib.load(handle)
    missing = [key for key in ("repository", "tag") if not isinstance(raw.get(key), str)]
    if missing:
        raise ValueError(f"{path}: missing or non-string {missing}")
    return ColabTarget(raw["repository"], raw["tag"])


def notebook_paths(root: str | Path = ROOT) -> list[Path]:
    """Every lesson and solutions notebook under ``root/notebooks``."""
    root = Path(root)
    return sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("notebooks/solutions/*.ipynb"))


def _code_cell(source: str, notebook) -> nbformat.NotebookNode:
    import nbformat

    cell = nbformat.from_dict({"cell_type": "code", "metadata": {}, "source": source, "outputs": []})
    cell["execution_count"] = None
    if (notebook.nbformat, notebook.nbformat_minor) >= (4, 5):
        cell["id"] = "colab-setup"  # deterministic, so a rewrite leaves no random diff
    return cell


def rewrite_notebook(notebook, relative: str, target: ColabTarget) -> list[str]:
    """Bring one notebook (an nbformat node, changed in place) in line with ``target``; return what changed."""
    changes = []
    badge = target.badge(relative)
    setup = target.setup_cell(relative)
    has_badge = False
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and BADGE_PATTERN.search(cell.source):
            has_badge = True
            new = BADGE_PATTERN.sub(lambda _: badge, cell.source)
            if new != cell.source:
                cell.source = new
                changes.append("badge")
    first_markdown = next((c for c in notebook.cells if c.cell_type == "markdown"), None)
    if not has_badge and first_markdown is not None:
        title, newline, rest = first_markdown.source.partition("\n")
        first_markdown.source = f"{title}\n\n{badge}\n" + (
            f"\n{rest.lstrip(chr(10))}" if newline and rest else ""
        )
        changes.append("badge added")
    setups = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(SETUP_MARKER)]
    if len(setups) > 1:
        raise ValueError(f"{relative}: {len(setups)} setup cells (cells starting {SETUP_MARKER!r}); keep one")
    if setups:
        if setups[0].source != setup:
            setups[0].source = setup
            changes.append("setup cell")
    else:
        position = 1 if notebook.cells and notebook.cells[0].cell_type == "markdown" else 0
        notebook.cells.insert(position, _code_cell(setup, notebook))
        changes.append("setup cell added")
    return changes


def rewrite_all(root: str | Path = ROOT, target: ColabTarget | None = None, *, write: bool = True) -> dict:
    """Rewrite (or, ``write=False``, only check) every notebook under ``root`` and the setup script of each
    notebook folder; ``{relative path: changes}``."""
    root = Path(root)
    target = target or read_target(root / "colab.toml")
    report = {}
    for folder in sorted({path.parent for path in notebook_paths(root)}):
        script = folder / SETUP_SCRIPT
        text = setup_script(folder.relative_to(root).as_posix())
        if not script.is_file() or script.read_text(encoding="utf-8") != text:
            report[script.relative_to(root).as_posix()] = [
                "setup script" if script.is_file() else "setup script added"
            ]
            if write:
                script.write_text(text, encoding="utf-8")
    for path in notebook_paths(root):
        relative = path.relative_to(root).as_posix()
        notebook = read_notebook(path)
        changes = rewrite_notebook(notebook, relative, target)
        if changes:
            report[relative] = changes
            if write:
                write_notebook(notebook, path)
    return report


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """A notebook as nbformat nodes, read as it is (no version conversion or validation pass)."""
    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    return rejoin_lines(nbformat.from_dict(json.loads(Path(path).read_text(encoding="utf-8"))))


def write_notebook(notebook, path: str | Path) -> None:
    """Write as nbformat's own writer lays a notebook out (indent 1, sorted keys), so diffs stay small."""
    from nbformat.v4.rwbase import split_lines

    text = json.dumps(split_lines(copy.deepcopy(notebook)), indent=1, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


# ------------------------------------------------------------------ what the setup cell calls on Colab

# modules whose replacement by pip the running process would not see (it keeps the version it imported)
WATCHED = ("numpy", "torch", "transformers", "tokenizers", "datasets", "pyarrow", "ipywidgets", "tqdm")


class ColabSetupError(RuntimeError):
    """The Colab setup cannot go on; the message is one sentence that says what to do."""


def _release(version: str) -> tuple[int, ...]:
    """``"2.11.0+cu126"`` -> ``(2, 11, 0)``: the numeric release, enough to compare with a ``>=`` floor."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _at_least(version: str, floor: str) -> bool:
    have, need = _release(version), _release(floor)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def torch_floor(pyproject: str | Path) -> str | None:
    """The ``torch>=`` floor that ``pyproject`` declares (None when it declares none)."""
    with Path(pyproject).open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    for requirement in dependencies:
        match = re.fullmatch(r"\s*torch\s*>=\s*([0-9][0-9.]*)\s*(,.*)?", requirement)
        if match:
            return match.group(1)
    return None


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["no output"])[-1]


def setup_colab(folder: str = "notebooks", *, clone: str = CLONE_DIR) -> list[str]:
    """Finish the Colab setup after the setup cell cloned the kit into ``clone``; nothing outside Colab.

    The setup cell calls it through its folder's ``colab_setup.ipy`` (``%run``), in the kernel's process.

    Checks that Colab's torch meets the kit's floor (before pip runs, so pip never reports an impossible
    resolution), installs the clone with its ``learn`` extra keeping Colab's torch (its CUDA build),
    raises when pip replaced a module this process had already imported (restart the runtime then), turns
    on Colab's custom widget manager when ipywidgets 8 is installed, and changes to the notebook's
    ``folder`` of the clone. Every failure is a `ColabSetupError` whose message says what to do. Returns
    what it did, one line each.
    """
    if "google.colab" not in sys.modules:
        return []
    import os
    import subprocess
    from importlib import metadata

    done = []
    try:
        torch_version: str | None = metadata.version("torch")
    except metadata.PackageNotFoundError:  # not a runtime Colab ships; pip installs torch then
        torch_version = None
    floor = torch_floor(Path(clone) / "pyproject.toml")
    if torch_version and floor and not _at_least(torch_version, floor):
        raise ColabSetupError(
            f"Colab's torch {torch_version} is older than the kit's floor (torch>={floor}): choose a newer "
            "runtime (Runtime > Change runtime type > Runtime version: Latest), or open the notebooks of a "
            "kit release made for this torch"
        )
    before = {name: metadata.version(name) for name in WATCHED if name in sys.modules}  # what was imported
    command = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{clone}[learn]"]
    if torch_version:
        command.append(f"torch=={torch_version}")  # keeps Colab's CUDA build
    print(f"Installing the kit from {clone} with its learn extra (about a minute)...", flush=True)
    pip = subprocess.run(command, capture_output=True, text=True)
    if pip.returncode:
        raise ColabSetupError(
            f"pip could not install the kit into Colab's Python (exit {pip.returncode}: "
            f"{_last_error_line(pip.stderr or pip.stdout)}); restart the runtime and run this cell again, "
            "and if it fails the same way open an issue with that line"
        )
    done.append(f"installed {clone}[learn] (torch {torch_version or 'from PyPI'})")
    changed = [name for name, version in before.items() if metadata.version(name) != version]
    if changed:
        raise ColabSetupError(
            f"pip changed {changed}: restart the runtime (Runtime > Restart session), then run all again"
        )
    if _release(metadata.version("ipywidgets"))[:1] >= (8,):  # Colab draws ipywidgets 8 only with this
        from google.colab import output

        output.enable_custom_widget_manager()
        done.append("custom widget manager on (ipywidgets 8)")
    if clone not in sys.path:
        sys.path.insert(0, clone)  # the editable install is only seen by a new process
    os.chdir(f"{clone}/{folder}")
    done.append(f"working folder {clone}/{folder}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Point every notebook's Colab badge and clone at colab.toml (and write each notebook "
        f"folder's {SETUP_SCRIPT}, which the setup cell runs)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a notebook or setup script disagrees"
    )
    parser.add_argument("--root", default=str(ROOT), help="the repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    target = read_target(root / "colab.toml")
    report = rewrite_all(root, target, write=not args.check)
    for relative, changes in report.items():
        print(f"{relative}: {', '.join(changes)}")
    verb = "disagree with" if args.check else "rewritten from"
    print(
        f"{len(report)} notebook(s) or setup script(s) {verb} colab.toml ({target.repository} @ {target.tag})"
    )
    return 1 if (args.check and report) else 0


if __name__ == "__main__":
    sys.exit(main())
