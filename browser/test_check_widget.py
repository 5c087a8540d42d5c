"""The browser checks pass on notebooks 02 and 07 and fail when a widget is not displayed (needs /usr/bin/chromium
and the playwright package; run with ``make browser-test``). One JupyterLab server and one browser serve all."""

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
    HUMAN_EVAL_NOTEBOOK,
    HUMAN_EVAL_SCREENSHOT,
    WidgetCheckError,
    check_human_eval_widget,
    check_notebook_widget,
    chromium_page,
    lab_server,
    with_labels_file,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
WIDGET_DISPLAY = "display(explorer.widget)"
BLIND_AB_DISPLAY = "display(evaluation.widget)"


def _without_widget(notebook_path: Path, display: str, out: Path) -> Path:
    """A copy of a notebook whose widget cell prints the widget instead of displaying it."""
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    replaced = 0
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if display in source:
            cell["source"] = source.replace(display, display.replace("display(", "print("))
            replaced += 1
    assert replaced == 1, f"expected one cell with {display!r} in {notebook_path.name}"
    out.write_text(json.dumps(notebook), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    broken = _without_widget(DEFAULT_NOTEBOOK, WIDGET_DISPLAY, folder / "02_no_widget.ipynb")
    human_eval, labels = with_labels_file(HUMAN_EVAL_NOTEBOOK, folder)
    broken_human_eval = _without_widget(human_eval, BLIND_AB_DISPLAY, folder / "07_no_widget.ipynb")
    served = [DEFAULT_NOTEBOOK, broken, human_eval, broken_human_eval]
    with lab_server(served) as (base_url, token, _), chromium_page() as page:
        yield (
            page,
            base_url,
            token,
            {
                "broken": broken.name,
                "human_eval": human_eval.name,
                "broken_human_eval": broken_human_eval.name,
                "labels": labels,
            },
        )


def test_widget_renders_and_reacts(lab) -> None:
    page, base_url, token, _names = lab
    DEFAULT_SCREENSHOT.unlink(missing_ok=True)
    seen = check_notebook_widget(page, base_url, token, DEFAULT_NOTEBOOK.name, DEFAULT_SCREENSHOT)
    assert {"beta", "gamma"} <= set(seen["labels"]) and seen["beta_before"] != seen["beta_after"]
    assert DEFAULT_SCREENSHOT.stat().st_size > 10_000  # a real image of the widget cell


def test_check_fails_without_the_widget(lab) -> None:
    page, base_url, token, names = lab
    with pytest.raises(WidgetCheckError, match="slider"):
        check_notebook_widget(page, base_url, token, names["broken"], screenshot=None)


def test_human_eval_widget_renders_and_a_click_records_a_label(lab) -> None:
    page, base_url, token, names = lab
    HUMAN_EVAL_SCREENSHOT.unlink(missing_ok=True)
    seen = check_human_eval_widget(
        page, base_url, token, names["human_eval"], HUMAN_EVAL_SCREENSHOT, labels_file=names["labels"]
    )
    assert "0 labelled" in seen["progress_before"] and "1 labelled" in seen["progress_after"]
    assert len(seen["saved"]) == 1 and seen["saved"][0]["choice"] == "A"
    assert seen["saved"][0]["learner_verdict"] in ("policy", "reference")
    assert HUMAN_EVAL_SCREENSHOT.stat().st_size > 10_000


def test_human_eval_check_fails_without_the_widget(lab) -> None:
    page, base_url, token, names = lab
    with pytest.raises(WidgetCheckError, match="blind A/B widget"):
        check_human_eval_widget(page, base_url, token, names["broken_human_eval"], screenshot=None)
