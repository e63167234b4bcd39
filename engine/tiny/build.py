"""Build `phi4-tiny`: Phi-4's architecture and chat format at toy scale, trained on CPU in a few minutes.

The model ships in the repository (``engine/tiny/phi4-tiny-v{TINY_VERSION}/``: safetensors weights,
tokenizer, config, and ``phifleet_tiny.json`` with the build settings and each file's sha256), and
``tiny_model_dir`` returns that directory as it is: nothing is built at run time. Why ship it: training is
deterministic on one CPU but float kernels differ between CPUs, so a model built on first use labelled
the bundled examples at 85.7-93% depending on the machine. Shipped weights behave the same everywhere.

Regenerate the shipped artifact (bump ``TINY_VERSION`` when the weights change)::

    OMP_NUM_THREADS=1 python -m phifleet.engine.tiny.build --write-artifact

or build a copy elsewhere with ``phifleet model build-tiny --output DIR`` (same code, same settings).
Everything is seeded, single-threaded, a fixed number of steps, and needs no network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

from phifleet.engine.chat_template import ENDOFTEXT, IM_END, PAD, PHI4_CHAT_TEMPLATE, SPECIAL_TOKENS, render_chat
from phifleet.engine.errors import ModelNotFoundError
from phifleet.engine.prompts import classification_prompt, extraction_prompt
from phifleet.engine.tiny.corpus import LABELS, TRAIN_PRODUCTS, WRITE_PROMPT, Review, training_reviews

log = logging.getLogger(__name__)

TINY_VERSION = 3
SEED = 1234
VOCAB_SIZE = 2048
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
TRAIN_STEPS = 2000
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
WRITE_FRACTION = 0.05  # share of "Write a {label} review of a {product}." examples
EXTRACT_FRACTION = 0.15  # share of review -> {"sentiment", "product"} JSON examples; the rest classify
TWO_LABEL_FRACTION = 0.4  # share of positive/negative rows asked with the labels "positive, negative" only
TOKENIZER_EXAMPLES = 8000
BUCKET_BATCHES = 16  # batches are cut from runs of this many batches sorted by length: less padding
METADATA_FILE = "phifleet_tiny.json"
SHIPPED_DIR = Path(__file__).resolve().parent / f"phi4-tiny-v{TINY_VERSION}"


def is_built(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / "config.json").is_file()


def tiny_model_dir() -> Path:
    """The shipped model's directory inside the package (read-only: nothing at run time writes there)."""
    if not is_built(SHIPPED_DIR):
        raise ModelNotFoundError(
            f"phi4-tiny is missing from {SHIPPED_DIR} (a broken install?): "
            "regenerate it with `python -m phifleet.engine.tiny.build --write-artifact`",
            param="model",
        )
    return SHIPPED_DIR


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file in a model directory except the metadata that records them."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.iterdir())
        if f.is_file() and f.name != METADATA_FILE
    }


def verify_tiny_model(path: Path) -> list[str]:
    """Files whose sha256 differs from the metadata's record, or that are missing or unrecorded; [] if intact."""
    recorded: dict[str, str] = json.loads((path / METADATA_FILE).read_text())["files"]
    actual = file_digests(path)
    return sorted(name for name in recorded.keys() | actual.keys() if recorded.get(name) != actual.get(name))


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


def _label_set(rng: random.Random, label: str) -> list[str]:
    """The labels a training prompt offers, in shuffled order: all three, or just positive/negative.

    Users (and the natural test set) ask with two labels as often as with three.
    """
    labels = list(LABELS)
    if label != "neutral" and rng.random() < TWO_LABEL_FRACTION:
        labels = ["positive", "negative"]
    rng.shuffle(labels)
    return labels


def review_schema(fields: Sequence[str], labels: Sequence[str]) -> dict[str, object]:
    """The JSON schema of an extraction over reviews: ``sentiment`` (an enum of ``labels``) and/or ``product``,
    in the order given. The tests and the extract examples ask with these."""
    kinds: dict[str, dict[str, object]] = {
        "sentiment": {"type": "string", "enum": list(labels)},
        "product": {"type": "string"},
    }
    return {
        "type": "object",
        "properties": {f: kinds[f] for f in fields},
        "required": list(fields),
        "additionalProperties": False,
    }


def _extraction(rng: random.Random, r: Review) -> tuple[str, str]:
    """A review → JSON example: the fields in a random order (the model reads the order from the schema)."""
    fields = ["sentiment", "product"] if r.product in r.text else ["sentiment"]
    if len(fields) == 2 and rng.random() < 0.3:
        fields = [rng.choice(fields)]
    rng.shuffle(fields)
    schema = review_schema(fields, _label_set(rng, r.label))
    values = {"sentiment": r.label, "product": r.product}
    answer = json.dumps({f: values[f] for f in fields})
    return extraction_prompt(r.text, json.dumps(schema)).text, answer


def _examples(rng: random.Random, data: list[Review]) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: mostly classification, some review writing (from reviews of 5 words or more),
    some extraction of the review's fields as JSON."""
    out = []
    for r in data:
        draw = rng.random()
        if draw < EXTRACT_FRACTION:
            out.append(_extraction(rng, r))
        elif draw < EXTRACT_FRACTION + WRITE_FRACTION and len(r.text.split()) >= 5:
            prompt = render_chat([{"role": "user", "content": WRITE_PROMPT.format(label=r.label, product=r.product)}])
            out.append((prompt, r.text))
        else:
            out.append((classification_prompt(r.text, _label_set(rng, r.label)).text, r.label))
    return out


def training_examples(steps: int = TRAIN_STEPS, seed: int = SEED) -> list[tuple[str, str]]:
    """Every (prompt, answer) pair a build with these settings trains on, in order."""
    return _examples(random.Random(seed), training_reviews(steps * BATCH_SIZE, seed=seed))


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


def _settings(steps: int, seed: int) -> dict[str, object]:
    return {
        "seed": seed,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "vocab_size": VOCAB_SIZE,
        "shape": MODEL_SHAPE,
        "write_fraction": WRITE_FRACTION,
        "extract_fraction": EXTRACT_FRACTION,
        "two_label_fraction": TWO_LABEL_FRACTION,
        "bucket_batches": BUCKET_BATCHES,
        "torch": torch.__version__,
        "threads": 1,
    }


def build_tiny_model(path: Path, steps: int = TRAIN_STEPS, seed: int = SEED) -> dict[str, object]:
    """Build, train and save the tiny model into ``path`` (replaced atomically). Returns its metadata."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        examples = training_examples(steps, seed)
        corpus = [p + a for p, a in examples[:TOKENIZER_EXAMPLES]]
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
        loss = _train(model, encoded, tok.pad_token_id, steps, seed)
        model.eval()
        meta = {
            "name": "phi4-tiny",
            "version": TINY_VERSION,
            "build": _settings(steps, seed),
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


def _length_batches(
    encoded: list[tuple[list[int], list[int]]], steps: int, rng: random.Random
) -> list[list[tuple[list[int], list[int]]]]:
    """``steps`` batches of similar-length rows, in shuffled order within each run of BUCKET_BATCHES."""
    span = BATCH_SIZE * BUCKET_BATCHES
    rows = encoded[: steps * BATCH_SIZE]
    out: list[list[tuple[list[int], list[int]]]] = []
    for start in range(0, len(rows), span):
        chunk = sorted(rows[start : start + span], key=lambda r: len(r[0]))
        group = [chunk[i : i + BATCH_SIZE] for i in range(0, len(chunk), BATCH_SIZE)]
        rng.shuffle(group)
        out += group
    return out


def _train(
    model: Phi3ForCausalLM, encoded: list[tuple[list[int], list[int]]], pad_id: int, steps: int, seed: int
) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    ema = None
    for rows in _length_batches(encoded, steps, random.Random(seed)):
        batch = _batch(rows, pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
    return float(ema or 0.0)


def _save(path: Path, model: Phi3ForCausalLM, tok: PreTrainedTokenizerFast, meta: dict[str, object]) -> None:
    """Write into a temporary sibling, record every file's sha256 in the metadata, then swap it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    meta["files"] = file_digests(tmp)
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    tmp.chmod(0o755)  # mkdtemp and safetensors make them private; the shipped copy is read by everyone
    for f in tmp.iterdir():
        f.chmod(0o644)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def main(argv: list[str] | None = None) -> int:
    """``--write-artifact`` regenerates the shipped model; ``--output DIR`` builds a copy elsewhere."""
    parser = argparse.ArgumentParser(prog="python -m phifleet.engine.tiny.build", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--write-artifact", action="store_true", help=f"rebuild the shipped {SHIPPED_DIR.name}/")
    where.add_argument("--output", type=Path, help="directory to build into")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="training steps (the artifact's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    meta = build_tiny_model(SHIPPED_DIR if args.write_artifact else args.output, steps=args.steps)
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
