"""Batched sampling from a chat model: the one place the kit generates text.

Prompts go through the tokenizer's chat template with the assistant header appended, are left-padded so
every row ends where generation starts, and only the newly generated tokens are decoded. Sampling is pure
(no top-k unless asked), seeded per batch inside a forked RNG, so the same call gives the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..runtime.progress import progress_bar

Prompt = str | Sequence[dict]


def _as_messages(prompt: Prompt, index: int) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        raise ValueError(f"prompt {index}: a conversation must be a list of messages ending with a user turn")
    return messages


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> list[str]:
    """One response per prompt (a user string or a message list), decoded without special tokens.

    ``progress``: a progress bar over the prompts (None: only for `runtime.progress.LONG_WORK` prompts or more)."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be positive")
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be positive when sampling (use do_sample=False for greedy)")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs a pad token and an eos token")
    conversations = [_as_messages(p, i) for i, p in enumerate(prompts)]
    device = next(model.parameters()).device
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
    was_training = model.training
    model.eval()
    responses: list[str] = []
    bar = progress_bar(len(conversations), progress, "generating")
    try:
        for start in range(0, len(conversations), batch_size):
            texts = tokenizer.apply_chat_template(
                conversations[start : start + batch_size], tokenize=False, add_generation_prompt=True
            )
            batch = tokenizer(
                texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt"
            ).to(device)
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                torch.inference_mode(),
            ):
                torch.manual_seed(seed + start)
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )  # [b, T_prompt + T_new]
            new_tokens = output[:, batch["input_ids"].shape[1] :]  # [b, T_new]
            responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            bar.update(new_tokens.shape[0])
    finally:
        bar.close()
        model.train(was_training)
    return responses
