"""Issue 23, bad input: each row-level defect is that row's problem (or a note), named with its line number;
the good rows load.

Each test writes the bad file, first shows what the defect did before (the raw library error, where there was
one), then loads it through the public loader and checks the row, the line, the reason and the rows kept.
"""

from __future__ import annotations

import copy
import json
import warnings

import pyarrow as pa
import pytest
from datasets import Dataset

from simplepo_helpers import PreferenceDataError, load_preference_dataset, read_jsonl, validate_preferences


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


def test_extra_column_of_mixed_types_is_the_rows_problem_not_an_arrow_error(tmp_path):
    rows = [
        standard(id=1, meta={"source": "a"}),
        standard("Name a colour.", " Blue.", " Dog.", id="x-2", meta={"source": "b"}),
        standard("Say hi.", " Hi!", " No.", id=3, meta={"source": 7}),
        standard("Count to two.", " 1, 2.", " 2, 1.", id=None),  # null joins any column
        standard("Spell cat.", " C-A-T.", " D-O-G.", id=5),
    ]
    with pytest.raises(pa.ArrowInvalid):  # before: the loader's Dataset.from_list raised this, no line number
        Dataset.from_list(rows)
    path = write(tmp_path, rows)

    dataset, report = load_preference_dataset(path)
    assert found(report) == [(1, 2, "mixed_type_column"), (2, 3, "mixed_type_column")]
    assert str(report.bad_rows[0]) == (
        "row 1 (line 2): mixed_type_column: column 'id': Arrow cannot store this row's str beside row 0 "
        "(line 1)'s int (Could not convert 'x-2' with type str: tried to convert to int64)"
    )
    assert (
        "column 'meta': Arrow cannot store this row's dict beside row 0 (line 1)'s dict ("
        in report.bad_rows[1].message
    )
    assert dataset["id"] == [1, None, 5]
    assert dataset["prompt"] == ["What is two plus three?", "Count to two.", "Spell cat."]
    # the list input reports the same rows, without line numbers
    assert [(b.index, b.reason) for b in validate_preferences(rows).bad_rows] == [
        (1, "mixed_type_column"),
        (2, "mixed_type_column"),
    ]


def test_values_that_fit_the_first_row_one_by_one_but_not_together(tmp_path):
    # each value fits beside row 0's {"a": 1}, but "b" cannot be a string and a number: the first to clash goes
    rows = [standard(meta={"a": 1}), standard("Say hi.", " Hi!", " No.", meta={"b": "x"})]
    rows += [
        standard("Spell cat.", " C-A-T.", " D-O-G.", meta={"b": 2}),
        standard("Q?", " A.", " B.", meta={}),
    ]
    with pytest.raises(pa.ArrowInvalid):
        Dataset.from_list(rows)
    dataset, report = load_preference_dataset(write(tmp_path, rows))
    assert found(report) == [(2, 3, "mixed_type_column")]
    assert dataset["prompt"] == ["What is two plus three?", "Say hi.", "Q?"]


def test_a_value_arrow_cannot_store_at_all(tmp_path):
    rows = [standard(tags=[1, "two"]), standard("Say hi.", " Hi!", " No.", tags=[3])]
    dataset, report = load_preference_dataset(write(tmp_path, rows))
    assert found(report) == [(0, 1, "mixed_type_column")]
    assert report.bad_rows[0].message.startswith(
        "column 'tags': Arrow cannot store this row's list (Could not convert"
    )
    assert dataset["tags"] == [[3]]


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


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_warns_and_is_an_error_under_strict(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.warns(UserWarning, match="^no preference rows: empty.jsonl is empty$"):
        dataset, report = load_preference_dataset(path)
    assert (len(dataset), report.n_total, report.n_bad) == (0, 0, 0)
    with pytest.raises(PreferenceDataError, match="^no preference rows: empty.jsonl is empty$") as raised:
        load_preference_dataset(path, strict=True)
    assert raised.value.report.n_total == 0
    with pytest.warns(UserWarning, match="no preference rows: the input is empty"):
        validate_preferences([])


def test_a_file_with_rows_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = load_preference_dataset(write(tmp_path, [standard()]), strict=True)
    assert report.n_kept == 1


def test_duplicated_rows_are_kept_and_listed(tmp_path):
    first, other = standard(id=1), standard("Name a colour.", " Blue.", " Dog.")
    copy_with_new_id = standard(id=9)  # the same pair: the extra column does not make it new
    path = write(tmp_path, [first, other, "", first, copy_with_new_id])

    dataset, report = load_preference_dataset(path, strict=True)  # a note, not an error: strict loads
    assert len(dataset) == 4 and report.n_bad == 0
    assert [(n.index, n.line, n.reason) for n in report.notes] == [
        (2, 4, "duplicate_row"),
        (3, 5, "duplicate_row"),
    ]
    assert str(report.notes[0]) == "row 2 (line 4): duplicate_row: same pair as row 0 (line 1)"
    assert "2 kept rows repeat an earlier row (each copy counts in training):" in report.summary()
    assert "row 3 (line 5): duplicate_row: same pair as row 0 (line 1)" in report.summary()


def test_duplicates_of_a_bad_row_are_bad_rows_not_notes():
    bad = standard(rejected=" Five.")
    report = validate_preferences([bad, standard("Q?", " A.", " B."), bad])
    assert [(b.index, b.reason) for b in report.bad_rows] == [
        (0, "identical_responses"),
        (2, "identical_responses"),
    ]
    assert report.notes == []


def test_responses_differing_only_in_whitespace_are_reported(tmp_path):
    rows = [
        standard(),
        standard(rejected=" Five. "),  # trailing space
        standard("Name a colour.", " Blue.", " Blue.\n"),
        standard("Say hi.", " Hi!", " hi!"),  # case differs: a preference, kept
    ]
    dataset, report = load_preference_dataset(write(tmp_path, rows))
    assert found(report) == [(1, 2, "identical_responses"), (2, 3, "identical_responses")]
    assert str(report.bad_rows[0]) == (
        "row 1 (line 2): identical_responses: chosen and rejected differ only in whitespace"
    )
    assert dataset["rejected"] == [" Six.", " hi!"]
    _, chat_report = load_preference_dataset([chat(), chat(chosen="Blue.", rejected="Blue.  "), chat()])
    assert [(b.index, b.reason, b.message) for b in chat_report.bad_rows] == [
        (1, "identical_responses", "chosen and rejected differ only in whitespace")
    ]


def test_role_order_is_checked_over_the_whole_prompt(tmp_path):
    rows = [
        chat(),
        chat(("Hello, how can I help?", "Name a colour."), roles=["assistant", "user"]),
        chat(("Hi.", "Name a colour."), roles=["user", "user"]),
        chat(("Be brief.", "Hi.", "Hello.", "Name a colour."), roles=["system", "user", "assistant", "user"]),
    ]
    dataset, report = load_preference_dataset(write(tmp_path, rows))
    assert found(report) == [(1, 2, "wrong_roles"), (2, 3, "wrong_roles")]
    assert str(report.bad_rows[0]) == (
        "row 1 (line 2): wrong_roles: prompt[0] is assistant as the first turn: after any system messages the "
        "prompt must alternate user/assistant, starting with user"
    )
    assert report.bad_rows[1].message.startswith("prompt[1] is user after prompt[0] (user):")
    assert [len(prompt) for prompt in dataset["prompt"]] == [1, 4]


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
