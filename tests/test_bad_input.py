"""Issue 23, bad input: each row-level defect is that row's problem (or a note), named with its line number;
the good rows load.

Each test writes the bad file, first shows what the defect did before (the raw library error, where there was
one), then loads it through the public loader and checks the row, the line, the reason and the rows kept.
"""

from __future__ import annotations

import copy
import json

import pytest

from simplepo_helpers import load_preference_dataset, read_jsonl


def standard(prompt="What is two plus three?", chosen=" Five.", rejected=" Six.", **extra):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def chat(prompt=("Name a colour.",), chosen="Blue.", rejected="Dog.", roles=None, **extra):
    roles = roles or ["user"] * len(prompt)
    return {
        "prompt": [{"role": role, "content": text} for role, text in zip(roles, prompt, strict=True)],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


def write(tmp_path, lines, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def found(report):
    return [(bad.index, bad.line, bad.reason) for bad in report.bad_rows]


def _raising_template(tokenizer):
    """The test tokenizer, its chat template refusing system messages as Gemma's and Mistral's do."""
    refusing = copy.deepcopy(tokenizer)
    refusing.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{% endfor %}" + tokenizer.chat_template
    )
    return refusing


def test_chat_template_that_raises_is_the_rows_problem(tmp_path, tokenizer):
    refusing = _raising_template(tokenizer)
    system_row = chat(("Be brief.", "Name a colour."), roles=["system", "user"])
    with pytest.raises(Exception, match="System role not supported") as raised:  # before: escaped the loader
        refusing.apply_chat_template(system_row["prompt"], tokenize=False)
    assert type(raised.value).__module__.startswith("jinja2")
    path = write(tmp_path, [chat(), system_row, chat(("Say hi.",), "Hi!", "No.")])

    dataset, report = load_preference_dataset(path, tokenizer=refusing)
    assert found(report) == [(1, 2, "untokenisable")]
    assert report.bad_rows[0].message == "the chat template raised TemplateError: System role not supported"
    assert [row[0]["content"] for row in dataset["prompt"]] == ["Name a colour.", "Say hi."]
    assert load_preference_dataset(path, tokenizer=tokenizer)[1].n_bad == 0  # the kit's template takes it


def test_duplicated_json_key_is_the_rows_problem(tmp_path):
    twice = '{"prompt": "Q?", "chosen": " A.", "rejected": " B.", "chosen": " C."}'
    nested = (
        '{"prompt": [{"role": "user", "content": "Q?", "content": "R?"}],'
        ' "chosen": [{"role": "assistant", "content": "A."}], "rejected": [{"role": "assistant", "content": "B."}]}'
    )
    assert json.loads(twice)["chosen"] == " C."  # before: the last value won, silently
    path = write(tmp_path, [standard(), twice, standard("Say hi.", " Hi!", " No."), nested])

    rows, lines = read_jsonl(path)
    assert (
        lines == [1, 2, 3, 4]
        and [getattr(row, "reason", None) for row in rows][1::2] == ["duplicate_key"] * 2
    )
    dataset, report = load_preference_dataset(path)
    assert found(report) == [(1, 2, "duplicate_key"), (3, 4, "duplicate_key")]
    assert str(report.bad_rows[0]) == "row 1 (line 2): duplicate_key: line 2 gives the key 'chosen' twice"
    assert report.bad_rows[1].message == "line 4 gives the key 'content' twice"
    assert dataset["prompt"] == ["What is two plus three?", "Say hi."]


@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, '{"prompt": ' + "[" * 100_000])
def test_deeply_nested_line_is_the_rows_problem(tmp_path, deep):
    with pytest.raises(RecursionError):  # before: the whole load raised this
        json.loads(deep)
    path = write(tmp_path, [standard(), deep, standard("Say hi.", " Hi!", " No.")])
    dataset, report = load_preference_dataset(path)
    assert found(report) == [(1, 2, "too_deeply_nested")]
    assert report.bad_rows[0].message == "line 2 nests brackets deeper than the JSON parser can follow"
    assert dataset["prompt"] == ["What is two plus three?", "Say hi."]
