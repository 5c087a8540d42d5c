"""Which ipywidgets the widget tests run against, and tqdm's notebook bar on it.

In .venv this is ipywidgets 8. ``make widgets7-test`` puts ipywidgets 7.7 (what Colab ships) first on the
path and sets SIMPLEPO_IPYWIDGETS_MAJOR=7, then runs this file with the widget tests of
test_notebook_utils.py and test_evaluation.py, so the pair browser, the beta/gamma explorer and the
generation browser are exercised on both majors.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import ipywidgets
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def test_ipywidgets_is_the_version_asked_for_and_meets_the_declared_floor():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if d.startswith("ipywidgets")]
    floor = Version(re.fullmatch(r"ipywidgets>=([\d.]+)", spec).group(1))
    assert floor <= Version("7.7.1")  # Colab's own ipywidgets satisfies the requirement: no upgrade there
    assert Version(ipywidgets.__version__) >= floor
    expected = os.environ.get("SIMPLEPO_IPYWIDGETS_MAJOR")
    if expected is not None:
        assert Version(ipywidgets.__version__).major == int(expected), ipywidgets.__file__


def test_tqdm_notebook_bar_builds_on_this_ipywidgets():
    from tqdm.notebook import tqdm as notebook_tqdm

    bar = notebook_tqdm(total=3, desc="runs", display=False)
    bar.update(2)
    bar.refresh()  # update() redraws only after mininterval
    progress = [w for w in bar.container.children if isinstance(w, ipywidgets.FloatProgress)]
    assert len(progress) == 1 and progress[0].value == 2 and progress[0].max == 3
    bar.close()
