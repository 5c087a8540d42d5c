"""Line-level defects in a JSONL file: each is that row's problem, with its line number; the rest loads.

Before: the file was opened as UTF-8 text, so one undecodable line made the whole load raise. The test
files here are built from bytes, and the first check confirms they really are not UTF-8 as a whole.
"""

from __future__ import annotations

import json

import pytest

from simplepo_helpers import load_preference_dataset, read_jsonl


def standard(prompt="What is two plus three?", chosen=" Five.", rejected=" Six.", **extra):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def line(row) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


def test_a_line_that_is_not_utf8_is_its_rows_problem(tmp_path):
    latin1 = json.dumps(standard("Café?", " Oui.", " Non."), ensure_ascii=False).encode("latin-1")
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        b"\n".join([line(standard()), latin1, line(standard("Name a colour.", " Blue.", " Dog."))])
    )
    with pytest.raises(UnicodeDecodeError):  # the file as a whole is not UTF-8
        path.read_text(encoding="utf-8")

    dataset, report = load_preference_dataset(path)
    assert [(bad.index, bad.line, bad.reason) for bad in report.bad_rows] == [(1, 2, "invalid_encoding")]
    assert "line 2 is not valid UTF-8 (byte 0xe9" in report.bad_rows[0].message
    assert "row 1 (line 2): invalid_encoding" in str(report)
    assert dataset["prompt"] == ["What is two plus three?", "Name a colour."]


def test_cut_multibyte_character_and_broken_json_on_other_lines(tmp_path):
    euro = "€".encode()  # three bytes; keep only the first two
    cut = b'{"prompt": "Price in ' + euro[:2] + b'?", "chosen": " 5", "rejected": " 6"}'
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\n".join([cut, b'{"prompt": "Hi"', line(standard()), b"", b"\xff\xfe", b""]))
    dataset, report = load_preference_dataset(path)
    assert [(bad.line, bad.reason) for bad in report.bad_rows] == [
        (1, "invalid_encoding"),
        (2, "invalid_json"),
        (5, "invalid_encoding"),
    ]
    assert report.n_total == 4 and report.kept_indices == [2] and len(dataset) == 1


def test_lone_surrogate_escape_is_reported_not_passed_to_arrow(tmp_path):
    # valid JSON and valid UTF-8 bytes, but "\ud800" decodes to a string no UTF-8 writer (Arrow) accepts
    path = tmp_path / "pairs.jsonl"
    surrogate = b'{"prompt": "Hi", "chosen": " a\\ud800", "rejected": " b"}'
    path.write_bytes(
        b"\n".join([line(standard()), surrogate, line(standard("Say hi.", " Hi!", " No."))]) + b"\n"
    )
    rows, lines = read_jsonl(path)
    with pytest.raises(UnicodeEncodeError):
        rows[1]["chosen"].encode("utf-8")
    dataset, report = load_preference_dataset(path)
    assert [(bad.index, bad.line, bad.reason) for bad in report.bad_rows] == [(1, 2, "invalid_encoding")]
    assert "'chosen'" in report.bad_rows[0].message
    assert dataset["chosen"] == [" Five.", " Hi!"]


def test_surrogate_inside_a_chat_message_and_a_list_input():
    rows = [
        {
            "prompt": [{"role": "user", "content": "Hi \ud83d"}],
            "chosen": [{"role": "assistant", "content": "Hello."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        },
        standard(),
    ]
    _, report = load_preference_dataset(rows)
    assert [(bad.index, bad.line, bad.reason) for bad in report.bad_rows] == [(0, None, "invalid_encoding")]


def test_byte_order_mark_and_crlf_line_ends_load(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(standard()) + b"\r\n" + line(standard(prompt="Név?")) + b"\r\n")
    dataset, report = load_preference_dataset(path)
    assert report.n_bad == 0 and dataset["prompt"] == ["What is two plus three?", "Név?"]
