"""Notebook utilities: cmp, Colab detection, the widgets' callback logic (no browser), the notebook runner."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from simplepo_helpers.course.display import (
    cmp,
    draw_simpo_curves,
    html_table,
    in_colab,
    pair_panels_html,
    simpo_curves,
    tokens_html,
)
from simplepo_helpers.course.run_notebooks import main as run_notebooks_main
from simplepo_helpers.course.widgets import ALL_FAMILIES, LossExplorer, PairBrowser

matplotlib.use("Agg")


# ----------------------------------------------------------------------------------------------- cmp


def test_cmp_reports_exact_close_and_max_difference(capsys):
    exact = cmp("same", torch.tensor([1.0, 2.0]), [1.0, 2.0])
    assert exact.exact and exact.close and exact.max_diff == 0.0 and bool(exact)
    near = cmp("near", np.array([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-9], dtype=torch.float64))
    assert not near.exact and near.close and near.max_diff == pytest.approx(1e-9, rel=1e-3)
    far = cmp("far", 0.5, 0.75)
    assert not far and far.max_diff == pytest.approx(0.25)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("far") and "max diff: 2.50e-01" in lines[2]


def test_cmp_nan_is_never_close_and_shapes_must_match():
    assert not cmp("nan", [float("nan")], [float("nan")])
    with pytest.raises(ValueError, match=r"shapes differ, \(2,\) vs \(3,\)"):
        cmp("shapes", [1.0, 2.0], [1.0, 2.0, 3.0])


def test_cmp_float32_against_float64_uses_tolerance_not_exactness():
    value = torch.tensor([0.1], dtype=torch.float32)
    result = cmp("dtypes", value, [0.1])
    assert result.close and not result.exact  # 0.1 is not representable the same way in both


def test_in_colab_follows_the_google_colab_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert in_colab()


def test_tokens_html_colours_each_token_by_role_and_escapes_it():
    out = tokens_html([("<s>", "bos"), ("Hi\n", "prompt"), ("<b>", "response"), ("<|im_end|>", "eos")])
    assert out.count("<span title=") == 4
    assert "&lt;s&gt;" in out and "&lt;b&gt;" in out and "<b>" not in out  # token text is escaped
    assert "Hi\\n</span>" in out  # a newline is shown, not rendered
    assert (
        "title='eos'" in out and "roles: " in out and "padding</span>" not in out
    )  # legend: roles present only
    with pytest.raises(ValueError, match="unknown token roles \\['nonsense'\\]"):
        tokens_html([("x", "nonsense")])


def test_html_table_escapes_cells_and_formats_floats():
    out = html_table([{"prompt": "2 < 3?", "score": 0.123456}, {"prompt": "a\nb", "extra": "ignored"}])
    assert out.count("<tr>") == 3 and out.count("<th") == 2  # header + two rows, columns of the first row
    assert "2 &lt; 3?" in out and "0.123<" in out and "a<br>b" in out and "ignored" not in out
    assert html_table([]) == "<table></table>"


# ----------------------------------------------------------------------------------------- browser

ROWS = [
    {
        "family": "arithmetic",
        "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
        "chosen": [{"role": "assistant", "content": "5."}],
        "rejected": [{"role": "assistant", "content": "6."}],
        "chosen_score": 1.0,
        "rejected_score": 0.0,
    },
    {
        "family": "safety",
        "prompt": "How do I poison a zorb?",
        "chosen": "Sorry, I can't help <with> that.",
        "rejected": "Mix glowcap & stir.",
        "chosen_score": 1.0,
        "rejected_score": 0.0,
    },
    {"family": "arithmetic", "prompt": "What is 4 + 4?", "chosen": "8.", "rejected": "Eight or nine."},
    {"family": "arithmetic", "prompt": "What is 1 + 0?", "chosen": "1.", "rejected": "0."},
]


def test_pair_panels_escape_text_and_show_scores():
    prompt, chosen, rejected = pair_panels_html(ROWS[1])
    assert "How do I poison a zorb?" in prompt and "judge score" not in prompt
    assert "&lt;with&gt;" in chosen and "<with>" not in chosen and "judge score:</b> 1.0" in chosen
    assert "glowcap &amp; stir" in rejected and "judge score:</b> 0.0" in rejected
    _, chosen, _ = pair_panels_html(ROWS[2])  # no scores in the row: no score line
    assert "judge score" not in chosen and "8." in chosen


def test_browser_steps_through_pairs_with_the_buttons():
    browser = PairBrowser(ROWS)
    assert browser.family.value == ALL_FAMILIES and browser.indices == [0, 1, 2, 3]
    assert "What is 2 + 3?" in browser.prompt_html.value and "5." in browser.chosen_html.value
    browser.next_button.click()
    assert browser.row is ROWS[1] and "glowcap" in browser.rejected_html.value
    assert browser.status.value == "pair 2 of 4 (row 1)"
    browser.prev_button.click()
    browser.prev_button.click()  # wraps around to the last pair
    assert browser.row is ROWS[3] and "What is 1 + 0?" in browser.prompt_html.value


def test_browser_family_dropdown_filters_and_restarts():
    browser = PairBrowser(ROWS)
    assert list(browser.family.options) == [ALL_FAMILIES, "arithmetic", "safety"]
    browser.next_button.click()
    browser.family.value = "arithmetic"
    assert browser.indices == [0, 2, 3] and browser.row is ROWS[0]
    browser.next_button.click()
    assert browser.row is ROWS[2] and browser.status.value == "pair 2 of 3 (row 2)"
    browser.family.value = "safety"
    browser.next_button.click()  # one pair: next stays on it
    assert browser.indices == [1] and browser.row is ROWS[1]


def test_browser_needs_rows():
    with pytest.raises(ValueError, match="at least one row"):
        PairBrowser([])


# ----------------------------------------------------------------------------------- loss explorer


def test_simpo_curves_match_the_hand_formulas():
    beta, gamma = 2.5, 1.375
    margins = [-1.0, 0.0, 0.55, 2.0]
    curves = simpo_curves(margins, beta=beta, gamma=gamma)
    for i, m in enumerate(margins):
        z = beta * m - gamma
        assert curves["loss"][i] == pytest.approx(math.log1p(math.exp(-z)), abs=1e-12)  # softplus(-z)
        assert curves["grad_weight"][i] == pytest.approx(
            beta / (1 + math.exp(z)), abs=1e-12
        )  # beta*sigma(-z)
        assert curves["reward_margin"][i] == pytest.approx(beta * m)
    assert curves["loss"][2] == pytest.approx(math.log(2), abs=1e-12)  # margin gamma / beta: z = 0


def test_loss_explorer_sliders_recompute_the_curves():
    margins = np.linspace(-1.0, 1.0, 11)
    explorer = LossExplorer(margins, beta=2.0, gamma=0.0)
    assert explorer.curves["loss"][5] == pytest.approx(math.log(2))  # margin 0, gamma 0
    explorer.gamma.value = 1.0
    expected = simpo_curves(margins, beta=2.0, gamma=1.0)
    np.testing.assert_allclose(explorer.curves["loss"], expected["loss"], rtol=1e-12)
    explorer.beta.value = 5.0
    expected = simpo_curves(margins, beta=5.0, gamma=1.0)
    np.testing.assert_allclose(explorer.curves["grad_weight"], expected["grad_weight"], rtol=1e-12)
    assert explorer.curves["grad_weight"].max() <= 5.0  # the weight never exceeds beta


def test_draw_simpo_curves_marks_the_margin():
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2)
    curves = simpo_curves(np.linspace(-1, 1, 5), beta=2.0, gamma=1.0)
    draw_simpo_curves(axes, curves, beta=2.0, gamma=1.0)
    loss_line, margin_line = axes[0].get_lines()
    np.testing.assert_allclose(loss_line.get_ydata(), curves["loss"])
    assert list(margin_line.get_xdata()) == [0.5, 0.5]  # gamma / beta
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), curves["grad_weight"])
    plt.close(figure)


# --------------------------------------------------------------------------------- notebook runner


def _write_notebook(path, *sources):
    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_run_notebooks_writes_outputs_and_figures(tmp_path, capsys):
    (tmp_path / "nb").mkdir()
    _write_notebook(
        tmp_path / "nb" / "good.ipynb",
        "import os, matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\nprint(os.path.basename(os.getcwd()))",
        "plt.plot([1, 2, 3])\nplt.show()",
    )
    build = tmp_path / "build"
    assert run_notebooks_main([str(tmp_path / "nb" / "good.ipynb"), "--build-dir", str(build)]) == 0
    executed = nbformat.read(build / "notebooks" / "good.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "nb"  # the kernel ran in the notebook's folder
    figure = build / "figures" / "good" / "cell01_0.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert "ok" in capsys.readouterr().out


def test_run_notebooks_fails_naming_the_cell(tmp_path, capsys):
    _write_notebook(tmp_path / "bad.ipynb", "x = 1", "assert x == 2, 'x is not two'", "print('never')")
    assert run_notebooks_main([str(tmp_path / "bad.ipynb"), "--build-dir", str(tmp_path / "build")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "cell 1 (assert x == 2, 'x is not two'): AssertionError: x is not two" in out
    assert (tmp_path / "build" / "notebooks" / "bad.ipynb").is_file()  # the partial run is kept for reading


def test_every_lesson_and_solution_is_a_valid_notebook():
    """nbformat's schema: a cell id in a notebook whose nbformat_minor is below 5 makes `jupyter nbconvert`
    refuse it ("'id' was unexpected"), though nbval and JupyterLab take it."""
    root = Path(__file__).resolve().parents[1] / "notebooks"
    paths = sorted(root.glob("*.ipynb")) + sorted((root / "solutions").glob("*.ipynb"))
    assert len(paths) >= 14
    for path in paths:
        nbformat.validate(nbformat.read(path, as_version=4))  # raises ValidationError naming the cell
