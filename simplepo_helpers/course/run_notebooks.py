"""Execute notebooks headlessly into build/: ``python -m simplepo_helpers.course.run_notebooks notebooks/[0-9]*.ipynb``.

Each notebook runs in a fresh ``python3`` kernel with its own folder as the working directory. The executed
copy (with outputs) goes to ``build/notebooks/<name>.ipynb`` and every PNG figure to
``build/figures/<name>/cell<NN>_<k>.png``. One line per notebook reports its runtime and where its outputs
are; the exit status is 1 when any notebook fails, and the failing cell is named.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:  # the notebook extra (nbclient brings nbformat); main() says which extra to add when it is missing
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
except ImportError as missing:
    _MISSING: ImportError | None = missing
else:
    _MISSING = None

NEEDS_EXTRA = (
    'simplepo-run-notebooks needs the notebook extra (nbclient and the ipykernel kernel): pip install "simplepo-helpers[notebook]"'
    ' (in a clone: pip install -e ".[notebook]")'
)


@dataclass(frozen=True)
class RunResult:
    """One notebook's run: where its outputs went, how long it took, and the error if it failed."""

    name: str
    seconds: float
    notebook_out: Path
    figures: list[Path]
    error: str | None = None


def extract_figures(notebook: nbformat.NotebookNode, folder: Path) -> list[Path]:
    """Write every ``image/png`` output of ``notebook`` to ``folder``; return the files written."""
    written = []
    for cell_index, cell in enumerate(notebook.cells):
        pngs = [
            out["data"]["image/png"] for out in cell.get("outputs", []) if "image/png" in out.get("data", {})
        ]
        for k, png in enumerate(pngs):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"cell{cell_index:02d}_{k}.png"
            path.write_bytes(base64.b64decode(png))
            written.append(path)
    return written


def _failing_cell(notebook: nbformat.NotebookNode) -> str | None:
    """'cell N (first line of its source): Error: message' for the first cell with an error output."""
    for index, cell in enumerate(notebook.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else "(empty)"
                return f"cell {index} ({first_line}): {out['ename']}: {out['evalue']}"
    return None


def run_notebook(
    path: Path, build_dir: Path, *, kernel_name: str = "python3", timeout: int = 900
) -> RunResult:
    """Execute one notebook into ``build_dir``; never raises for a failing cell (see ``RunResult.error``)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, kernel_name=kernel_name, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
    )
    error = None
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        error = _failing_cell(notebook) or f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    seconds = time.perf_counter() - start
    notebook_out = build_dir / "notebooks" / path.name
    notebook_out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, notebook_out)
    figures = extract_figures(notebook, build_dir / "figures" / path.stem)
    return RunResult(path.stem, seconds, notebook_out, figures, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default: 900)")
    args = parser.parse_args(argv)
    if _MISSING is not None or (args.kernel == "python3" and importlib.util.find_spec("ipykernel") is None):
        print(NEEDS_EXTRA, file=sys.stderr)
        return 2
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    failed = 0
    for path in args.notebooks:
        result = run_notebook(path, args.build_dir, kernel_name=args.kernel, timeout=args.timeout)
        status = "ok    " if result.error is None else "FAILED"
        figures = (
            f", {len(result.figures)} figures in {args.build_dir / 'figures' / result.name}/"
            if result.figures
            else ""
        )
        print(f"{status} {path} in {result.seconds:6.1f} s -> {result.notebook_out}{figures}", flush=True)
        if result.error is not None:
            print(f"       failed at {result.error}", flush=True)
            failed += 1
    if failed:
        print(f"{failed} of {len(args.notebooks)} notebooks failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
