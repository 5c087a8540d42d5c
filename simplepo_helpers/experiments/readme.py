"""The README's results section, rendered from ``build/results.json``.

``python -m simplepo_helpers.experiments.readme README.md`` writes the table and its footnote between the
README's ``<!-- results:start -->`` and ``<!-- results:end -->`` markers. Apart from ``results.py`` (the
file) and ``report.py`` (the tables), so that neither imports the other back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation.results import load_results, update_readme_text, validate_results
from .report import final_table, footnote


def render_table(results: Mapping[str, Any]) -> str:
    """The README's results section: the eval table and the line that says where every number comes from."""
    validate_results(results)
    return final_table(results) + "\n\n" + footnote(results)


def update_readme(readme: str | Path, results: Mapping[str, Any]) -> bool:
    """Render ``results`` into the README's results section; True when the file changed."""
    return update_readme_text(readme, render_table(results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render build/results.json into the README's results table.")
    parser.add_argument("readme", type=Path, help="the markdown file with the results markers (README.md)")
    parser.add_argument(
        "--results", type=Path, default=None, help="results file (default: build/results.json)"
    )
    args = parser.parse_args(argv)
    try:
        changed = update_readme(args.readme, load_results(args.results))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
