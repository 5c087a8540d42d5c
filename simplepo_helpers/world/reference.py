"""The reference model: a tiny Llama trained by SFT on the world's conversations, shipped with the kit.

`load_reference_model()` is the one call notebooks and tests use: it loads the **shipped** model
(``simplepo_helpers/world/reference_model/``, about 3 MB), the way a course starts from a published SFT
checkpoint. It never builds anything. Why shipped: the build is deterministic on one machine but matrix
products round differently on different CPUs, so a build on another CPU is *another model* of the same
quality (its eval score differs by a few hundredths), and every recorded number would belong to one machine.

A rebuild (``make reference``, or ``ensure_reference_model(ReferenceConfig(seed=...))``) goes to the cache,
never over the shipped files; ``load_reference_model(config)`` loads such a build. The cache folder is named
after a hash of the recipe, the SFT data and the kit's code, and a build writes into a temporary folder
renamed into place when complete, under a file lock, so a killed or concurrent build never leaves a
half-written model behind. ``make reference-ship`` (maintainers only) replaces the shipped model.

Decoding the notebooks use (and the saved generation_config): pure sampling at temperature 1.0, top_p 1.0,
no top-k, at most `MAX_NEW_TOKENS` new tokens, through `simplepo_helpers.generate_responses`. On the
held-out evaluation prompts the reference answers about 40% correctly (tests/test_world_reference.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..batching import IGNORE_INDEX
from ..runtime.files import publish_folder
from ..runtime.fingerprint import code_fingerprint, file_fingerprint
from .cache import cache_dir
from .dataset import WorldConfig, sft_rows, to_jsonl
from .responses import MAX_NEW_TOKENS
from .tokenizer import load_tokenizer, world_tokenizer

SHIPPED_DIR = Path(__file__).resolve().parent / "reference_model"  # the shipped reference (package data)


@dataclass(frozen=True)
class ReferenceConfig:
    """Model shape and SFT recipe of the reference model (about 0.8M parameters)."""

    hidden_size: int = 128
    intermediate_size: int = 320
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    epochs: int = 7
    batch_size: int = 32
    learning_rate: float = 6e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    num_threads: int = 1  # tiny matrices gain little from more threads; a shared CPU loses a lot
    world: WorldConfig = field(default_factory=WorldConfig)


def model_config(config: ReferenceConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=tokenizer.model_max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def sft_example(
    tokenizer: PreTrainedTokenizerFast, messages: list[dict], index: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation: labels cover the assistant reply and its EOS only."""
    prompt_ids = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)[
        "input_ids"
    ]
    full_ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            f"SFT row {index}: the templated prompt is not a prefix of the templated conversation"
        )
    end = (
        full_ids.index(tokenizer.eos_token_id, len(prompt_ids)) + 1
    )  # keep the EOS, drop the newline after it
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) : end]
    return full_ids[:end], labels


def _collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id)  # [B, T]
    labels = torch.full((len(examples), width), IGNORE_INDEX)  # [B, T]
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # [B, T]
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices, each drawn from similar lengths (less padding), in shuffled order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def train_reference(
    config: ReferenceConfig, progress: bool = True
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Build the tokenizer from the world's SFT text, then SFT a fresh Llama on those rows."""
    rows = sft_rows(config.world)
    tokenizer = world_tokenizer(config.world)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        model = _sft(config, tokenizer, rows, progress)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.generation_config.update(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS
    )
    return model, tokenizer


def _sft(
    config: ReferenceConfig, tokenizer: PreTrainedTokenizerFast, rows: list[dict], progress: bool
) -> LlamaForCausalLM:
    """A fresh Llama trained on `rows`: AdamW, warm-up then cosine, loss on the replies only."""
    examples = [sft_example(tokenizer, row["messages"], i) for i, row in enumerate(rows)]
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config(config, tokenizer))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return 0.1 + 0.45 * (
            1 + math.cos(math.pi * (step - config.warmup_steps) / max(1, total - config.warmup_steps))
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order_rng = random.Random(config.seed)
    model.train()
    with tqdm(total=total, desc="SFT reference model", disable=not progress) as bar:
        for _ in range(config.epochs):
            for indices in _length_grouped_batches(
                [len(ids) for ids, _ in examples], config.batch_size, order_rng
            ):
                batch = _collate([examples[i] for i in indices], tokenizer.pad_token_id)
                loss = model(**batch).loss  # mean NLL over the reply tokens
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return model


@functools.lru_cache(maxsize=8)
def cache_key(config: ReferenceConfig) -> str:
    """Hash of the recipe, the kit's code and the SFT data (the model's only input): new key, new build."""
    recipe = {
        k: v for k, v in asdict(config).items() if k != "world"
    }  # the world enters through its SFT rows
    digest = hashlib.sha256(
        json.dumps({"recipe": recipe, "code": code_fingerprint("world", "runtime")}, sort_keys=True).encode()
    )
    digest.update(to_jsonl(sft_rows(config.world)))
    return digest.hexdigest()[:16]


def reference_model_dir(config: ReferenceConfig | None = None) -> Path:
    """The shipped model's folder (``config`` None), or where the cache build of ``config`` lives (it may not
    be built yet)."""
    if config is None:
        return SHIPPED_DIR
    return cache_dir() / f"reference-{cache_key(config)}"


def reference_fingerprint(config: ReferenceConfig | None = None) -> str:
    """16 hex digits of the weights file of the shipped model (``config`` None) or of a cache build."""
    return file_fingerprint(_existing(reference_model_dir(config), config) / "model.safetensors")


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): no lock; the atomic rename still prevents half caches
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def machine_description() -> dict[str, str]:
    """What rounded this build's matrix products: CPU model and vector extensions, torch version."""
    import platform

    flags = ""
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), ""
        )
        flags = " ".join(sorted({f for f in info.split() if f.startswith(("avx512f", "amx", "avx2"))}))
        return {"cpu": model, "vector": flags, "torch": torch.__version__, "machine": platform.machine()}
    return {
        "cpu": platform.processor(),
        "vector": flags,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def ensure_reference_model(
    config: ReferenceConfig | None = None, *, rebuild: bool = False, progress: bool = True
) -> Path:
    """Build the reference model of ``config`` into the cache unless it is already there; return its folder.

    Not the shipped model: on another CPU the same recipe gives another model of the same quality."""
    config = config or ReferenceConfig()
    target = reference_model_dir(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if target.exists() and not rebuild:
            return target
        start, cpu_start = time.perf_counter(), time.process_time()
        model, tokenizer = train_reference(config, progress=progress)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / "build_info.json").write_text(
                json.dumps(
                    {
                        "config": asdict(config),
                        "seconds": round(time.perf_counter() - start, 1),
                        "cpu_seconds": round(time.process_time() - cpu_start, 1),
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "machine": machine_description(),
                        "sft_data": hashlib.sha256(to_jsonl(sft_rows(config.world))).hexdigest()[:16],
                    },
                    indent=1,
                )
            )
            publish_folder(staging, target)  # a rebuild: the old model goes only once the new one is complete
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if progress:
            print(
                f"reference model built in {time.perf_counter() - start:.0f} s -> {target}\n"
                "(a rebuild: on this CPU's rounding, another model of the shipped one's quality, not the same "
                "weights; load it with load_reference_model(config))"
            )
    return target


def _existing(path: Path, config: ReferenceConfig | None) -> Path:
    if (path / "model.safetensors").is_file():
        return path
    if config is None:
        raise FileNotFoundError(
            f"the shipped reference model is missing ({path}): reinstall the kit, or restore the folder "
            "with `git checkout -- simplepo_helpers/world/reference_model`"
        )
    raise FileNotFoundError(
        f"no cache build of {config} at {path}: build it first with `make reference SEED={config.seed}` or "
        "`ensure_reference_model(config)` (1-2 minutes)"
    )


def load_reference_model(
    config: ReferenceConfig | None = None, *, progress: bool = True
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """(model, tokenizer) in eval mode: the shipped reference (``config`` None), or the cache build of
    ``config`` (built beforehand by ``ensure_reference_model``; never built here)."""
    path = _existing(reference_model_dir(config), config)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    return model.eval(), load_tokenizer(path)


def ship_reference_model(source: Path) -> Path:
    """Copy a built model folder over the shipped one (maintainers, ``make reference-ship``)."""
    staging = SHIPPED_DIR.with_name(f".{SHIPPED_DIR.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    publish_folder(staging, SHIPPED_DIR)
    return SHIPPED_DIR
