"""The blind A/B widget without a browser: simulated clicks, the win rate, Cohen's kappa and the saved labels."""

from __future__ import annotations

import json
import math

import pytest

from simplepo_helpers.course.human_eval import (
    BlindABEval,
    blind_items,
    cohen_kappa,
    judge_verdict,
    load_labels,
    verdict_of,
)
from simplepo_helpers.evaluation.metrics import wilson_interval

PROMPTS = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(6)]
REFERENCE = [f"ref answer {i}" for i in range(6)]
POLICY = [f"policy answer {i}" for i in range(6)]
REF_SCORES = [0.0, 1.0, 1.0, 0.25, 0.0, 1.0]
POLICY_SCORES = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # judge: policy, tie, reference, policy, tie, tie


def _items(seed: int = 0):
    return blind_items(
        PROMPTS, REFERENCE, POLICY, reference_scores=REF_SCORES, policy_scores=POLICY_SCORES, seed=seed
    )


def _click(widget: BlindABEval, verdicts: list[str]) -> None:
    """Press the button that gives each wanted verdict ("policy", "reference", "tie"), item by item."""
    for verdict in verdicts:
        side = widget.item.policy_side
        other = "B" if side == "A" else "A"
        choice = {"policy": side, "reference": other, "tie": "tie"}[verdict]
        widget.buttons[choice].click()


def test_items_are_blind_and_keep_the_answers_paired():
    items = _items()
    sides = [item.policy_side for item in items]
    assert set(sides) <= {"A", "B"}
    for i, item in enumerate(items):
        shown = {item.answer_a, item.answer_b}
        assert shown == {REFERENCE[i], POLICY[i]}
        assert (item.answer_a if item.policy_side == "A" else item.answer_b) == POLICY[i]
        assert item.prompt == f"What is {i} + 1?"
    assert [item.judge_verdict for item in items] == ["policy", "tie", "reference", "policy", "tie", "tie"]
    # seeded: the same seed gives the same order, and over many items both sides are used
    assert [item.policy_side for item in _items()] == sides
    many = blind_items(["p"] * 200, ["r"] * 200, ["q"] * 200, seed=1)
    share_a = sum(item.policy_side == "A" for item in many) / 200
    assert 0.35 < share_a < 0.65


def test_verdicts_from_clicks_and_scores():
    assert verdict_of("A", "A") == "policy" and verdict_of("B", "A") == "reference"
    assert verdict_of("B", "B") == "policy" and verdict_of("tie", "B") == "tie"
    assert judge_verdict(1.0, 0.25) == "policy" and judge_verdict(0.0, 0.5) == "reference"
    assert judge_verdict(0.5, 0.5) == "tie"
    with pytest.raises(ValueError, match="choice"):
        verdict_of("C", "A")


def test_cohen_kappa_hand_derived():
    # 10 items, 2 labels. Rater 1: yes x6, no x4; rater 2: yes x5, no x5; both yes 4, both no 3: p_o = 0.7.
    first = ["y"] * 4 + ["y"] * 2 + ["n"] * 1 + ["n"] * 3
    second = ["y"] * 4 + ["n"] * 2 + ["y"] * 1 + ["n"] * 3
    p_e = 0.6 * 0.5 + 0.4 * 0.5  # 0.5
    assert math.isclose(cohen_kappa(first, second), (0.7 - p_e) / (1 - p_e))  # 0.4
    assert math.isclose(cohen_kappa(first, second), 0.4)
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    # opposite labels on a balanced two-label set: -1
    assert math.isclose(cohen_kappa(["a", "b"] * 3, ["b", "a"] * 3), -1.0)
    # symmetric in the raters
    assert math.isclose(cohen_kappa(second, first), cohen_kappa(first, second))


def test_cohen_kappa_matches_the_confusion_matrix_formula():
    # a second implementation: kappa from the 3x3 confusion matrix (Cohen 1960, eq. 1)
    learner = ["policy", "tie", "reference", "policy", "policy", "tie", "reference", "tie", "policy"]
    judge = ["policy", "policy", "reference", "tie", "policy", "tie", "policy", "tie", "reference"]
    labels = ["policy", "reference", "tie"]
    n = len(learner)
    matrix = [
        [sum(a == r and b == c for a, b in zip(learner, judge, strict=True)) for c in labels] for r in labels
    ]
    p_o = sum(matrix[k][k] for k in range(3)) / n
    rows = [sum(matrix[k]) / n for k in range(3)]
    cols = [sum(matrix[r][k] for r in range(3)) / n for k in range(3)]
    p_e = sum(r * c for r, c in zip(rows, cols, strict=True))
    assert math.isclose(cohen_kappa(learner, judge), (p_o - p_e) / (1 - p_e))


def test_cohen_kappa_refuses_undefined_or_mismatched_input():
    with pytest.raises(ValueError, match="undefined"):
        cohen_kappa(["tie"] * 4, ["tie"] * 4)
    with pytest.raises(ValueError, match="different numbers"):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        cohen_kappa([], [])


def test_simulated_clicks_give_the_win_rate_and_kappa(tmp_path):
    path = tmp_path / "labels.jsonl"
    widget = BlindABEval(_items(), labels_path=path)
    assert widget.summary().n_labelled == 0 and widget.result_html.value == ""
    # the learner: policy, tie, reference, reference, tie, policy
    learner = ["policy", "tie", "reference", "reference", "tie", "policy"]
    _click(widget, learner[:3])
    partial = widget.summary()
    assert partial.n_labelled == 3 and not widget.done
    assert len(load_labels(path)) == 3  # saved after every click
    _click(widget, learner[3:])
    assert widget.done and widget.labels.count(None) == 0
    summary = widget.summary()
    # win rate: 2 wins, 2 ties, 2 losses -> (2 + 1) / 6
    assert (summary.wins, summary.ties, summary.losses) == (2, 2, 2)
    assert math.isclose(summary.win_rate, 0.5)
    assert (summary.ci_low, summary.ci_high) == pytest.approx(wilson_interval(3.0, 6))
    # judge: policy, tie, reference, policy, tie, tie -> (2 + 3/2) / 6
    assert math.isclose(summary.judge_win_rate, 3.5 / 6)
    judge = ["policy", "tie", "reference", "policy", "tie", "tie"]
    assert math.isclose(summary.agreement, 4 / 6)
    assert math.isclose(summary.kappa, cohen_kappa(learner, judge))
    # by hand: p_o = 4/6; learner freq p 2/6, r 2/6, t 2/6; judge p 2/6, r 1/6, t 3/6 -> p_e = 6/18 = 1/3
    assert math.isclose(summary.kappa, (4 / 6 - 1 / 3) / (1 - 1 / 3))
    assert "Done." in widget.result_html.value and "kappa 0.50" in widget.result_html.value


def test_saved_labels_record_the_blinding_and_reload(tmp_path):
    path = tmp_path / "sub" / "labels.jsonl"
    items = _items(seed=3)
    widget = BlindABEval(items, labels_path=path)
    _click(widget, ["policy"] * len(items))
    records = load_labels(path)
    assert [r["item"] for r in records] == list(range(len(items)))
    for record, item in zip(records, items, strict=True):
        assert record["choice"] == item.policy_side  # clicking the policy's side each time
        assert record["learner_verdict"] == "policy" and record["judge_verdict"] == item.judge_verdict
        assert {record["answer_a"], record["answer_b"]} == {item.answer_a, item.answer_b}
    assert widget.summary().win_rate == 1.0
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 7"):
        load_labels(path)


def test_back_changes_an_earlier_label():
    widget = BlindABEval(_items())
    widget.buttons["tie"].click()
    assert widget.position == 1 and widget.labels[0] == "tie"
    widget.back_button.click()
    assert widget.position == 0
    widget.buttons["A"].click()
    assert widget.labels[0] == "A" and widget.position == 1  # next unlabelled item
    assert "item 2 of 6; 1 labelled" in widget.progress.value


def test_rendered_html_is_escaped_and_hides_the_sides():
    items = blind_items(["<b>hi</b>"], ["<script>x</script>"], ["ok"], seed=0)
    widget = BlindABEval(items)
    shown = widget.prompt_html.value + widget.answer_a_html.value + widget.answer_b_html.value
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "&lt;b&gt;hi" in shown
    assert "policy" not in shown.lower() and "reference" not in shown.lower()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="pair up"):
        blind_items(PROMPTS, REFERENCE[:2], POLICY)
    with pytest.raises(ValueError, match="both"):
        blind_items(PROMPTS, REFERENCE, POLICY, reference_scores=REF_SCORES)
    with pytest.raises(ValueError, match="item 1: the policy answer"):
        blind_items(PROMPTS[:2], REFERENCE[:2], ["a", None])
    with pytest.raises(ValueError, match="at least one"):
        BlindABEval([])
    widget = BlindABEval(_items())
    with pytest.raises(ValueError, match="choice"):
        widget.choose("C")


def test_summary_without_judge_scores_reports_no_kappa():
    widget = BlindABEval(blind_items(PROMPTS[:2], REFERENCE[:2], POLICY[:2], seed=0))
    _click(widget, ["policy", "policy"])
    summary = widget.summary()
    assert summary.win_rate == 1.0 and summary.kappa is None and summary.judge_win_rate is None
    assert "kappa" not in str(summary)
    json.dumps(widget.records())  # JSON-able


def test_a_rebuilt_widget_restores_the_labels_and_keeps_them(tmp_path):
    path = tmp_path / "labels.jsonl"
    first = BlindABEval(_items(), labels_path=path)
    _click(first, ["policy", "tie", "reference"])  # label 3, then the kernel restarts
    again = BlindABEval(_items(), labels_path=path)
    assert again.labels == first.labels and again.labels.count(None) == 3
    assert again.position == 3  # the first unlabelled item is on show
    _click(again, ["reference"])  # one click
    records = load_labels(path)
    assert [r["item"] for r in records] == [0, 1, 2, 3]  # the 3 earlier labels are still in the file
    assert [r["learner_verdict"] for r in records] == ["policy", "tie", "reference", "reference"]
    assert [p.name for p in tmp_path.iterdir()] == ["labels.jsonl"]  # atomic: no temporary left


def test_a_labels_file_of_other_items_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "labels.jsonl"
    _click(BlindABEval(_items(seed=0), labels_path=path), ["policy", "tie"])
    before = path.read_text()
    others = blind_items([f"Other {i}?" for i in range(6)], REFERENCE, POLICY, seed=0)
    with pytest.raises(ValueError, match=r"labels\.jsonl holds labels for other items \(item 0 differs"):
        BlindABEval(others, labels_path=path)
    assert path.read_text() == before


def test_the_default_labels_file_lies_outside_the_cache(tmp_path, monkeypatch):
    from simplepo_helpers.course.human_eval import LABELS_ENV, default_labels_path
    from simplepo_helpers.world import cache_dir

    monkeypatch.delenv(LABELS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_labels_path(3) == tmp_path / "labels" / "labels-seed3.jsonl"
    assert cache_dir().resolve() not in default_labels_path(3).resolve().parents
    monkeypatch.setenv(LABELS_ENV, str(tmp_path / "mine"))
    assert default_labels_path(0) == tmp_path / "mine" / "labels-seed0.jsonl"
