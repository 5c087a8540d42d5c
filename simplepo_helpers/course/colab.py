"""Colab links from one place: ``colab.toml`` (repository and release tag) -> every notebook's badge and setup cell.

    python -m simplepo_helpers.course.colab            # rewrite the notebooks (make colab-links)
    python -m simplepo_helpers.course.colab --check    # exit 1 and list what disagrees

Each notebook gets an "Open In Colab" badge pointing at its own path at the tag, and one setup cell (the
first code cell, ``SETUP_MARKER`` first) that clones the repository at the tag and installs the kit with
its ``learn`` extra, keeping Colab's torch and, when it is 7.x, Colab's ipywidgets; it restarts nothing
itself but says when pip replaced a module the process had already imported, and it turns on Colab's
custom widget manager when ipywidgets 8 is installed (Colab renders 8.x widgets only through it).
Solutions notebooks without a setup cell or a badge get them. Only cells that change are touched.
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

import nbformat
from nbformat.v4.rwbase import rejoin_lines, split_lines

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

SETUP_TEMPLATE = """\
# Colab only: clone the kit at its release tag and install it with the learner extra, keeping Colab's own
# torch (and its ipywidgets 7.x). Does nothing anywhere else. Written by `make colab-links` from colab.toml.
import os
import sys

if "google.colab" in sys.modules:
    import subprocess
    from importlib.metadata import version

    import torch

    if not os.path.isdir("__CLONE__"):
        subprocess.run(
            [
                "git",
                "clone",
                "--depth",
                "1",
                "--branch",
                "__TAG__",
                "https://github.com/__REPOSITORY__",
                "__CLONE__",
            ],
            check=True,
        )
    watched = ("numpy", "torch", "transformers", "tokenizers", "datasets", "pyarrow", "ipywidgets", "tqdm")
    before = {name: version(name) for name in watched if name in sys.modules}  # what this process imported
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            "__CLONE__[learn]",
            f"torch=={torch.__version__}",  # keeps Colab's CUDA build
        ],
        check=True,
    )
    changed = [name for name, v in before.items() if version(name) != v]
    if changed:
        raise RuntimeError(
            f"pip changed {changed}: restart the runtime (Runtime > Restart session), then run all again"
        )
    if int(version("ipywidgets").split(".")[0]) >= 8:  # Colab draws ipywidgets 8 only with this manager
        from google.colab import output

        output.enable_custom_widget_manager()
    sys.path.insert(0, "__CLONE__")  # the editable install is only seen by a new process
    os.chdir("__CLONE__/__FOLDER__")
"""


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

    def setup_cell(self, notebook: str) -> str:
        """The setup cell's source for ``notebook``: clone at the tag, install, chdir to its folder."""
        folder = str(Path(notebook).parent.as_posix())
        return (
            SETUP_TEMPLATE.replace("__CLONE__", CLONE_DIR)
            .replace("__TAG__", self.tag)
            .replace("__REPOSITORY__", self.repository)
            .replace("__FOLDER__", folder)
            .rstrip("\n")
        )


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
    """Rewrite (or, ``write=False``, only check) every notebook under ``root``; ``{relative path: changes}``."""
    root = Path(root)
    target = target or read_target(root / "colab.toml")
    report = {}
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
    return rejoin_lines(nbformat.from_dict(json.loads(Path(path).read_text(encoding="utf-8"))))


def write_notebook(notebook, path: str | Path) -> None:
    """Write as nbformat's own writer lays a notebook out (indent 1, sorted keys), so diffs stay small."""
    text = json.dumps(split_lines(copy.deepcopy(notebook)), indent=1, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Point every notebook's Colab badge and clone at colab.toml")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook disagrees")
    parser.add_argument("--root", default=str(ROOT), help="the repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    target = read_target(root / "colab.toml")
    report = rewrite_all(root, target, write=not args.check)
    for relative, changes in report.items():
        print(f"{relative}: {', '.join(changes)}")
    verb = "disagree with" if args.check else "rewritten from"
    print(f"{len(report)} notebook(s) {verb} colab.toml ({target.repository} @ {target.tag})")
    return 1 if (args.check and report) else 0


if __name__ == "__main__":
    sys.exit(main())
