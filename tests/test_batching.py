"""Tokenisation and batching: exact prompt/response split, one BOS, one EOS, labels, padding, truncation, TRL."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from conftest import CHAT_TEMPLATE, build_test_model, build_test_tokenizer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from simplepo_helpers import PreferenceCollator, decode_masked, explain_tokens, tokenize_preference
from simplepo_helpers.batching import truncate_preference

STANDARD = {
    "prompt": "What is two plus three?",
    "chosen": " Two plus three is five.",
    "rejected": " It is six.",
}
CONVERSATIONAL = {
    "prompt": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
    ],
    "chosen": [{"role": "assistant", "content": "Blue is a colour."}],
    "rejected": [{"role": "assistant", "content": "The quick brown fox."}],
    "family": "colours",  # extra columns are ignored by the collator
}
EXAMPLES = {"standard": STANDARD, "conversational": CONVERSATIONAL}


def response_text(example, name):
    value = example[name]
    return value if isinstance(value, str) else value[0]["content"]


def expected_prompt_text(tokenizer, example):
    """What the prompt part must decode to: BOS + text, or the chat template's prompt with the header."""
    if isinstance(example["prompt"], str):
        return tokenizer.bos_token + example["prompt"]
    return tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def row_length(batch, row):
    return int(batch["attention_mask"][row].sum())


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_labels_select_exactly_the_response_and_one_eos(tokenizer, fmt):
    example = EXAMPLES[fmt]
    batch = PreferenceCollator(tokenizer)([example])
    for row, name in enumerate(("chosen", "rejected")):
        assert decode_masked(tokenizer, batch["input_ids"][row], batch["labels"][row]) == (
            response_text(example, name) + tokenizer.eos_token
        )
        response = batch["labels"][row][batch["labels"][row] != -100]
        assert (response == tokenizer.eos_token_id).sum() == 1
        # the EOS is the last attended token: nothing of the template (e.g. its "\n") follows it
        assert batch["input_ids"][row, row_length(batch, row) - 1] == tokenizer.eos_token_id
        assert response[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_prompt_part_decodes_to_the_prompt_with_the_assistant_header(tokenizer, fmt):
    example = EXAMPLES[fmt]
    batch = PreferenceCollator(tokenizer)([example])
    for row in range(2):
        prompt_positions = (batch["labels"][row] == -100) & (batch["attention_mask"][row] == 1)
        prompt_text = decode(tokenizer, batch["input_ids"][row][prompt_positions].tolist())
        assert prompt_text == expected_prompt_text(tokenizer, example)
    if fmt == "conversational":
        assert prompt_text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_exactly_one_bos_at_the_start(tokenizer, fmt):
    # the fixture's post-processor adds a BOS and its chat template writes one too
    batch = PreferenceCollator(tokenizer)([EXAMPLES[fmt]])
    for row in batch["input_ids"]:
        assert row[0] == tokenizer.bos_token_id
        assert (row == tokenizer.bos_token_id).sum() == 1


def test_bos_written_in_the_prompt_text_is_not_doubled(tokenizer):
    tokens = tokenize_preference({**STANDARD, "prompt": "<s>" + STANDARD["prompt"]}, tokenizer)
    assert tokens == tokenize_preference(STANDARD, tokenizer)


def test_batch_layout_padding_and_labels(tokenizer):
    short = {"prompt": "Hi", "chosen": " hello", "rejected": " world!"}
    batch = PreferenceCollator(tokenizer, pad_to_multiple_of=8)([STANDARD, short])
    input_ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert input_ids.shape == mask.shape == labels.shape and input_ids.shape[0] == 4
    assert input_ids.dtype == mask.dtype == labels.dtype == torch.long
    assert input_ids.shape[1] % 8 == 0
    # rows 0..B-1 chosen, B..2B-1 rejected, in example order
    for row, (example, name) in enumerate(
        [(STANDARD, "chosen"), (short, "chosen"), (STANDARD, "rejected"), (short, "rejected")]
    ):
        assert decode_masked(tokenizer, input_ids[row], labels[row]) == example[name] + tokenizer.eos_token
        n = row_length(batch, row)
        assert mask[row, :n].all() and not mask[row, n:].any()  # right padding
        assert (input_ids[row, n:] == tokenizer.pad_token_id).all()
        assert (labels[row, n:] == -100).all()
    # labels are not shifted: equal to input_ids wherever they are set
    selected = labels != -100
    assert torch.equal(labels[selected], input_ids[selected])


def test_pretokenised_rows_give_the_same_batch(tokenizer):
    collator = PreferenceCollator(tokenizer)
    tokenised = [tokenize_preference(example, tokenizer) for example in (STANDARD, CONVERSATIONAL)]
    raw_batch = collator([STANDARD, CONVERSATIONAL])
    tokenised_batch = collator(tokenised)
    for key in raw_batch:
        assert torch.equal(raw_batch[key], tokenised_batch[key])


def test_pad_falls_back_to_eos(tokenizer):
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    batch = PreferenceCollator(no_pad)([STANDARD])
    short_row = 0 if row_length(batch, 0) < row_length(batch, 1) else 1
    n = row_length(batch, short_row)
    assert (batch["input_ids"][short_row, n:] == tokenizer.eos_token_id).all()
    assert (batch["labels"][short_row, n:] == -100).all()  # padding EOS is never a label


def hand_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no word splitting and the merge a+b -> ab, so merges can cross any boundary."""
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "a": 3, "b": 4, "c": 5, "ab": 6}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


HAND_BPE = hand_bpe_tokenizer()


def test_bpe_merge_across_the_prompt_response_boundary():
    tok = hand_bpe_tokenizer()
    # "ca" + "bc": together "cabc" -> c|ab|c, so the prompt tokens c|a are not a prefix of the whole
    assert tok("cabc", add_special_tokens=False)["input_ids"] == [5, 6, 5]
    tokens = tokenize_preference({"prompt": "ca", "chosen": "bc", "rejected": "cc"}, tok)
    assert tokens["prompt_ids"] == [0, 5, 3]  # <s> c a: the whole prompt, nothing lost
    assert tokens["chosen_ids"] == [4, 5, 1]  # b c </s>: the response tokenised on its own
    assert tokens["rejected_ids"] == [5, 5, 1]  # no merge across the boundary: c c </s>
    batch = PreferenceCollator(tok)([{"prompt": "ca", "chosen": "bc", "rejected": "cc"}])
    assert decode_masked(tok, batch["input_ids"][0], batch["labels"][0]) == "bc</s>"


def assert_exact_split(tok, prompt, chosen, rejected):
    assume(prompt.strip() and chosen.strip() and rejected.strip() and chosen.split() != rejected.split())
    tokens = tokenize_preference({"prompt": prompt, "chosen": chosen, "rejected": rejected}, tok)
    assert decode(tok, tokens["prompt_ids"]) == tok.bos_token + prompt
    assert decode(tok, tokens["chosen_ids"]) == chosen + tok.eos_token
    assert decode(tok, tokens["rejected_ids"]) == rejected + tok.eos_token


def texts(alphabet):
    return st.text(alphabet=alphabet, min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=texts("abc ?.\n"), chosen=texts("abc ?.\n"), rejected=texts("abc ?.\n"))
def test_split_is_exact_for_any_text(tokenizer, prompt, chosen, rejected):
    assert_exact_split(tokenizer, prompt, chosen, rejected)


@settings(max_examples=60, deadline=None)
@given(prompt=texts("abc"), chosen=texts("abc"), rejected=texts("abc"))
def test_split_is_exact_when_merges_cross_the_boundary(prompt, chosen, rejected):
    assert_exact_split(HAND_BPE, prompt, chosen, rejected)


def no_bos_tokenizer(bos_token: str | None) -> PreTrainedTokenizerFast:
    """The fixture tokenizer without a BOS anywhere (post-processor and template), like SmolLM2's."""
    raw = Tokenizer.from_str(build_test_tokenizer().backend_tokenizer.to_str())
    raw.post_processor = None
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=bos_token,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE.replace("{{ bos_token }}", ""),
    )


@pytest.mark.parametrize("bos_token", [None, "<s>"])  # "<s>" declared but never added by the tokenizer
def test_tokenizer_without_bos_gets_none(bos_token):
    tok = no_bos_tokenizer(bos_token)
    bos_id = tok.convert_tokens_to_ids("<s>")
    batch = PreferenceCollator(tok)([STANDARD, CONVERSATIONAL])
    assert not (batch["input_ids"] == bos_id).any()
    standard = tokenize_preference(STANDARD, tok)
    assert standard["prompt_ids"] == tok(STANDARD["prompt"])["input_ids"]
    chat = tokenize_preference(CONVERSATIONAL, tok)
    assert decode(tok, chat["prompt_ids"]) == expected_prompt_text(tok, CONVERSATIONAL)
    assert decode(tok, chat["prompt_ids"]).startswith("<|im_start|>system")


LONG_PROMPT = "Please count the letters in the word banana. " * 3 + "What is two plus three?"


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_max_prompt_length_keeps_the_prompt_end_and_bos(tokenizer, fmt):
    if fmt == "standard":
        example = {**STANDARD, "prompt": LONG_PROMPT}
    else:
        example = {**CONVERSATIONAL, "prompt": [{"role": "user", "content": LONG_PROMPT}]}
    full = tokenize_preference(example, tokenizer)
    cut = tokenize_preference(example, tokenizer, max_prompt_length=8)
    assert cut["prompt_ids"] == [tokenizer.bos_token_id] + full["prompt_ids"][-7:]
    assert cut["chosen_ids"] == full["chosen_ids"] and cut["rejected_ids"] == full["rejected_ids"]
    if fmt == "conversational":
        assert decode(tokenizer, cut["prompt_ids"]).endswith("<|im_start|>assistant\n")


def test_max_length_cuts_the_prompt_first_then_the_response_tail(tokenizer):
    example = {**STANDARD, "prompt": LONG_PROMPT}
    full = tokenize_preference(example, tokenizer)
    n_chosen, n_rejected = len(full["chosen_ids"]), len(full["rejected_ids"])
    assert n_chosen > n_rejected
    # room for the longer response: only the prompt is cut, to exactly what is left
    cut = tokenize_preference(example, tokenizer, max_length=n_chosen + 5)
    assert cut["prompt_ids"] == [tokenizer.bos_token_id] + full["prompt_ids"][-4:]
    assert cut["chosen_ids"] == full["chosen_ids"] and cut["rejected_ids"] == full["rejected_ids"]
    # less room: the prompt is down to BOS + its last token, the responses keep their start, no EOS
    cut = tokenize_preference(example, tokenizer, max_length=6)
    assert cut["prompt_ids"] == [tokenizer.bos_token_id, full["prompt_ids"][-1]]
    assert cut["chosen_ids"] == full["chosen_ids"][:4]
    assert cut["rejected_ids"] == full["rejected_ids"][:4]
    batch = PreferenceCollator(tokenizer, max_length=6)([example])
    assert batch["input_ids"].shape == (2, 6)
    assert ((batch["labels"] != -100).sum(dim=1) == 4).all()


def test_a_response_is_never_cut_to_nothing(tokenizer):
    with pytest.raises(ValueError, match="no room for a response token"):
        tokenize_preference(STANDARD, tokenizer, max_length=2)  # BOS + last prompt token fill it
    with pytest.raises(ValueError, match="max_prompt_length=1"):
        tokenize_preference(STANDARD, tokenizer, max_prompt_length=1)  # BOS + one token needs 2
    tokens = {"prompt_ids": [7, 8, 9], "chosen_ids": [4, 5], "rejected_ids": [6]}
    assert truncate_preference(tokens, max_length=2) == {
        "prompt_ids": [9],
        "chosen_ids": [4],
        "rejected_ids": [6],
    }


def test_collator_names_the_bad_example(tokenizer):
    collator = PreferenceCollator(tokenizer)
    with pytest.raises(ValueError, match=r"batch example 1: empty_response"):
        collator([STANDARD, {**STANDARD, "chosen": "  "}])
    with pytest.raises(ValueError, match=r"batch example 0: 'chosen_ids' is empty"):
        collator([{"prompt_ids": [1, 5], "chosen_ids": [], "rejected_ids": [3]}])
    with pytest.raises(ValueError, match="empty list"):
        collator([])


def test_eos_inside_a_response_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="contains the eos token"):
        tokenize_preference({**STANDARD, "chosen": " five<|im_end|> and more"}, tokenizer)


def test_template_that_changes_the_prompt_is_an_error(tokenizer):
    thinking = copy.deepcopy(tokenizer)
    thinking.chat_template = CHAT_TEMPLATE.replace(
        "'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>'"
    )
    assert thinking.chat_template != CHAT_TEMPLATE
    with pytest.raises(ValueError, match="renders the prompt differently"):
        tokenize_preference(CONVERSATIONAL, thinking)


def test_decode_masked_refuses_shifted_labels(tokenizer):
    batch = PreferenceCollator(tokenizer)([STANDARD])
    shifted = torch.roll(batch["labels"][0], shifts=-1)
    with pytest.raises(ValueError, match="shifted labels"):
        decode_masked(tokenizer, batch["input_ids"][0], shifted)


def test_explain_tokens_roles(tokenizer):
    short = {**CONVERSATIONAL, "chosen": [{"role": "assistant", "content": "Blue."}]}
    batch = PreferenceCollator(tokenizer)([short])
    explained = explain_tokens(
        tokenizer, batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    )
    roles = [role for _, role in explained]
    n_padding = batch["input_ids"].shape[1] - row_length(batch, 0)
    assert roles[0] == "bos" and roles.count("bos") == 1
    assert roles.count("padding") == n_padding and roles[len(roles) - n_padding :] == ["padding"] * n_padding
    assert roles.count("eos") == 1
    assert "".join(text for text, role in explained if role in ("response", "eos")) == "Blue.<|im_end|>"
    # the assistant header closes the prompt and is template, not response
    first_response = roles.index("response")
    n_header = len(tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    header = explained[first_response - n_header : first_response]
    assert "".join(text for text, _ in header) == "<|im_start|>assistant\n"
    assert {role for _, role in header} == {"template"}
    assert roles[first_response - n_header - 1] == "prompt"  # the "\n" closing the user turn
    prompt_text = "".join(text for text, role in explained if role in ("bos", "template", "prompt"))
    assert prompt_text == expected_prompt_text(tokenizer, short)


def trl_tokenisation(tokenizer, rows):
    """TRL 1.16 DPOTrainer's own tokenised rows (prompt_ids, chosen_ids, rejected_ids) for ``rows``."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir,
            bf16=False,
            use_cpu=True,
            report_to=[],
            activation_checkpointing=False,
            max_length=None,
            save_strategy="no",
        )
        trainer = DPOTrainer(
            model=build_test_model(len(tokenizer)),
            ref_model=build_test_model(len(tokenizer)),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        return [
            {key: row[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
            for row in trainer.train_dataset
        ]


def test_matches_trl_tokenisation(tokenizer):
    """Same prompt tokens and completion tokens as TRL, except the template's "\\n" after <|im_end|>.

    TRL trains on that newline as a completion token; here the response stops at the EOS (the model never
    generates past it), so TRL's chat completion = ours + ["\\n"]. Standard rows agree exactly.
    """
    pytest.importorskip("trl")
    chat_rows = [CONVERSATIONAL, {**CONVERSATIONAL, "prompt": CONVERSATIONAL["prompt"][1:]}]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for ours, theirs in zip(
        [tokenize_preference(row, tokenizer) for row in chat_rows],
        trl_tokenisation(tokenizer, chat_rows),
        strict=True,
    ):
        assert ours["prompt_ids"] == theirs["prompt_ids"]
        assert ours["chosen_ids"] + newline == theirs["chosen_ids"]
        assert ours["rejected_ids"] + newline == theirs["rejected_ids"]
    standard_rows = [STANDARD, {"prompt": "Name a colour.", "chosen": " Blue.", "rejected": " Red."}]
    theirs = trl_tokenisation(tokenizer, standard_rows)
    assert [tokenize_preference(row, tokenizer) for row in standard_rows] == theirs
    # and TRL's collator puts the completion mask exactly where our labels are
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    trl_batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(theirs)
    batch = PreferenceCollator(tokenizer)(standard_rows)
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    assert torch.equal(batch["labels"] != -100, trl_batch["completion_mask"].bool())
