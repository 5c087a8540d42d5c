"""The prediction-exercise helper: one line of feedback, never an exception for a wrong prediction."""

from __future__ import annotations

from simplepo_helpers.course.predict import compare_prediction


def test_no_prediction_yet(capsys):
    assert compare_prediction("x", None, 0.5) is None
    assert "no prediction yet" in capsys.readouterr().out


def test_numbers_within_tolerance(capsys):
    assert compare_prediction("x", 0.52, 0.5, tolerance=0.03) is True
    assert compare_prediction("x", 0.6, 0.5, tolerance=0.03) is False
    assert compare_prediction("x", 0.505, 0.5) is True  # default: 5% of |measured|, at least 0.01
    out = capsys.readouterr().out
    assert out.count("\n") == 3 and "predicted 0.600, measured 0.500" in out


def test_words(capsys):
    assert compare_prediction("x", " Falls", "falls", choices=["rises", "falls"]) is True
    assert compare_prediction("x", "rises", "falls", choices=["rises", "falls"]) is False
    assert compare_prediction("x", "up", "falls", choices=["rises", "falls"]) is None
    assert "predict one of" in capsys.readouterr().out
