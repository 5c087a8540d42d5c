"""The browser check passes on notebook 02 and fails when the widget is not displayed (needs /usr/bin/chromium
and the playwright package; run with ``make browser-test``). One JupyterLab server and one browser serve both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_widget import (  # noqa: E402
    CHROMIUM,
    DEFAULT_NOTEBOOK,
    DEFAULT_SCREENSHOT,
    WidgetCheckError,
    check_notebook_widget,
    chromium_page,
    lab_server,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
WIDGET_DISPLAY = "display(explorer.widget)"


def _without_widget(tmp_path: Path) -> Path:
    """A copy of notebook 02 whose widget cell prints the widget instead of displaying it."""
    notebook = json.loads(DEFAULT_NOTEBOOK.read_text(encoding="utf-8"))
    replaced = 0
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if WIDGET_DISPLAY in source:
            cell["source"] = source.replace(WIDGET_DISPLAY, "print(explorer.widget)")
            replaced += 1
    assert replaced == 1, f"expected one cell with {WIDGET_DISPLAY!r} in {DEFAULT_NOTEBOOK.name}"
    path = tmp_path / "02_no_widget.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    broken = _without_widget(tmp_path_factory.mktemp("broken"))
    with lab_server([DEFAULT_NOTEBOOK, broken]) as (base_url, token, _), chromium_page() as page:
        yield page, base_url, token, broken.name


def test_widget_renders_and_reacts(lab) -> None:
    page, base_url, token, _ = lab
    DEFAULT_SCREENSHOT.unlink(missing_ok=True)
    seen = check_notebook_widget(page, base_url, token, DEFAULT_NOTEBOOK.name, DEFAULT_SCREENSHOT)
    assert {"beta", "gamma"} <= set(seen["labels"]) and seen["beta_before"] != seen["beta_after"]
    assert DEFAULT_SCREENSHOT.stat().st_size > 10_000  # a real image of the widget cell


def test_check_fails_without_the_widget(lab) -> None:
    page, base_url, token, broken_name = lab
    with pytest.raises(WidgetCheckError, match="slider"):
        check_notebook_widget(page, base_url, token, broken_name, screenshot=None)
