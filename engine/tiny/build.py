"""Build `phi4-tiny`: Phi-4's architecture and chat format at toy scale, trained on CPU in about a minute.

Everything is deterministic (fixed seeds, one thread, a fixed number of steps), needs no network,
and writes a normal Hugging Face model directory that loads like real Phi-4 weights would.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from phifleet.engine.chat_template import ENDOFTEXT, IM_END, PAD, PHI4_CHAT_TEMPLATE, SPECIAL_TOKENS, render_chat
from phifleet.engine.prompts import classification_prompt
from phifleet.engine.tiny.corpus import LABELS, TRAIN_PRODUCTS, WRITE_PROMPT, Review, reviews
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

TINY_VERSION = 1
SEED = 1234
VOCAB_SIZE = 1024
# Phi-4's shape ratios at toy scale: 4 query heads over 2 KV heads (Phi-4: 40 over 10), MLP 3.5x hidden.
MODEL_SHAPE = dict(
    hidden_size=128,
    intermediate_size=448,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rope_theta=250000.0,
)
TRAIN_STEPS = 700
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
WRITE_FRACTION = 0.25
METADATA_FILE = "phifleet_tiny.json"


def default_home() -> Path:
    """Where phifleet keeps built models: $PHIFLEET_HOME, else the user cache directory."""
    env = os.environ.get("PHIFLEET_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("phifleet"))


def default_tiny_dir() -> Path:
    return default_home() / "models" / f"phi4-tiny-v{TINY_VERSION}"


def is_built(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / "config.json").is_file()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent first uses (several Ray actors on one machine) so the model is built once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tiny_model(path: Path | None = None) -> Path:
    """The built tiny model's directory, building it on first use."""
    path = path or default_tiny_dir()
    if is_built(path):
        return path
    with _file_lock(path.with_name(path.name + ".lock")):
        if not is_built(path):
            build_tiny_model(path)
    return path


def _train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (ENDOFTEXT, IM_END, PAD)],
        chat_template=PHI4_CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _examples(rng: random.Random, data: list[Review]) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: mostly classification with shuffled label order, some review writing."""
    out = []
    for r in data:
        if rng.random() < WRITE_FRACTION:
            prompt = render_chat([{"role": "user", "content": WRITE_PROMPT.format(label=r.label, product=r.product)}])
            out.append((prompt, r.text))
        else:
            labels = list(LABELS)
            rng.shuffle(labels)
            out.append((classification_prompt(r.text, labels), r.label))
    return out


def _encode(tok: PreTrainedTokenizerFast, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    p = tok.encode(prompt, add_special_tokens=False)
    a = tok.encode(answer + IM_END, add_special_tokens=False)
    return p + a, [-100] * len(p) + a  # loss on the assistant's answer only


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_tiny_model(path: Path, steps: int = TRAIN_STEPS, seed: int = SEED) -> dict[str, object]:
    """Build, train and save the tiny model into ``path`` (replaced atomically). Returns its metadata."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = random.Random(seed)
        torch.manual_seed(seed)
        train = reviews(steps * BATCH_SIZE, seed=seed)
        examples = _examples(rng, train)
        corpus = [p + a for p, a in examples[:4000]]
        corpus += [WRITE_PROMPT.format(label=label, product=p) for label in LABELS for p in TRAIN_PRODUCTS]
        tok = _train_tokenizer(corpus)
        config = Phi3Config(
            vocab_size=len(tok),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            tie_word_embeddings=False,
            **MODEL_SHAPE,
        )
        model = Phi3ForCausalLM(config)
        encoded = [_encode(tok, p, a) for p, a in examples]
        loss = _train(model, encoded, tok.pad_token_id, steps)
        model.eval()
        meta = {
            "name": "phi4-tiny",
            "version": TINY_VERSION,
            "seed": seed,
            "steps": steps,
            "final_loss": round(loss, 4),
            "parameters": sum(p.numel() for p in model.parameters()),
            "build_seconds": round(time.perf_counter() - started, 1),
            "labels": list(LABELS),
        }
        _save(path, model, tok, meta)
        log.info("built phi4-tiny at %s in %.1fs (loss %.3f)", path, meta["build_seconds"], loss)
        return meta
    finally:
        torch.set_num_threads(threads)


def _train(model: Phi3ForCausalLM, encoded: list[tuple[list[int], list[int]]], pad_id: int, steps: int) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    ema = None
    for step in range(steps):
        batch = _batch(encoded[step * BATCH_SIZE : (step + 1) * BATCH_SIZE], pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
    return float(ema or 0.0)


def _save(path: Path, model: Phi3ForCausalLM, tok: PreTrainedTokenizerFast, meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
