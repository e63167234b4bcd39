"""phi4-tiny: Phi-4's architecture at toy scale, shipped as a verified artifact, labelling people's own phrasing."""

import functools
import hashlib
import json
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoConfig

from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from phifleet.engine.chat_template import SPECIAL_TOKENS
from phifleet.engine.loading import resolve_model_dir
from phifleet.engine.prompts import classification_prompt
from phifleet.engine.tiny.build import (
    METADATA_FILE,
    SHIPPED_DIR,
    TINY_VERSION,
    build_tiny_model,
    is_built,
    main,
    tiny_model_dir,
    training_examples,
    verify_tiny_model,
)
from phifleet.engine.tiny.corpus import HELD_OUT_PRODUCTS, HELD_OUT_TEMPLATES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NGRAM = 6  # words: longer shared runs than this would mean a test review leaked into training


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accuracy(engine, rows: list[dict], labels: list[str]) -> float:
    scores = engine.score_labels([classification_prompt(r["text"], labels) for r in rows], labels)
    return sum(s.label == r["label"] for s, r in zip(scores, rows, strict=True)) / len(rows)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Runs of n words inside one sentence (across a full stop, generated sentences meet by chance)."""
    out: set[tuple[str, ...]] = set()
    for sentence in re.split(r"[.!?]", text):
        w = words(sentence)
        out |= {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}
    return out


def test_resolution_returns_the_shipped_artifact_unchanged(tiny_dir):
    before = {f.name: f.stat().st_mtime_ns for f in SHIPPED_DIR.iterdir()}
    assert tiny_dir == SHIPPED_DIR == resolve_model_dir("phi4-tiny") == tiny_model_dir()
    assert {f.name: f.stat().st_mtime_ns for f in SHIPPED_DIR.iterdir()} == before  # nothing built or written


def test_shipped_artifact_matches_its_recorded_digests():
    meta = json.loads((SHIPPED_DIR / METADATA_FILE).read_text())
    assert meta["version"] == TINY_VERSION and SHIPPED_DIR.name == f"phi4-tiny-v{TINY_VERSION}"
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(meta["files"])
    assert verify_tiny_model(SHIPPED_DIR) == []
    assert meta["build"]["seed"] and meta["steps"] > 0 and meta["build_seconds"] > 0
    assert sum(f.stat().st_size for f in SHIPPED_DIR.iterdir()) < 5 * 1024 * 1024  # a few MB at most


def test_has_phi4_architecture_and_tokens(tiny_dir):
    cfg = AutoConfig.from_pretrained(tiny_dir)
    assert cfg.architectures == ["Phi3ForCausalLM"]
    assert cfg.num_attention_heads // cfg.num_key_value_heads == 2
    assert not cfg.tie_word_embeddings  # untied, like Phi-4
    vocab = json.loads((tiny_dir / "tokenizer.json").read_text())["added_tokens"]
    assert {t["content"] for t in vocab} >= set(SPECIAL_TOKENS)
    meta = json.loads((tiny_dir / METADATA_FILE).read_text())
    assert 100_000 < meta["parameters"] < 5_000_000


def test_labels_natural_reviews_it_never_saw(engine):
    """Reviews written in people's own words (examples/natural_reviews.jsonl), asked as the product asks."""
    rows = read_jsonl(EXAMPLES / "natural_reviews.jsonl")
    assert accuracy(engine, rows, ["positive", "negative"]) >= 0.8


def test_labels_the_bundled_examples_with_three_labels(engine):
    rows = read_jsonl(EXAMPLES / "reviews.jsonl")
    assert accuracy(engine, rows, ["positive", "negative", "neutral"]) >= 0.9


def test_natural_set_is_large_balanced_and_varied():
    rows = read_jsonl(EXAMPLES / "natural_reviews.jsonl")
    labels = [r["label"] for r in rows]
    assert len(rows) >= 40 and min(labels.count("positive"), labels.count("negative")) >= 20
    assert set(labels) == {"positive", "negative"}
    assert len({r["text"] for r in rows}) == len(rows)
    lengths = sorted(len(words(r["text"])) for r in rows)
    assert lengths[0] <= 10 and lengths[-1] >= 20  # short and long reviews


@functools.cache
def trained_texts() -> tuple[str, ...]:
    """Every prompt and answer the shipped build trained on."""
    return tuple(text for example in training_examples() for text in example)


def test_natural_reviews_were_never_trained_on():
    """No natural review appears in the shipped build's training data, whole or as a long run of words."""
    trained = trained_texts()
    natural = [r["text"] for r in read_jsonl(EXAMPLES / "natural_reviews.jsonl")]
    joined = "\n".join(trained).lower()
    assert not [t for t in natural if t.lower() in joined]
    trained_grams = set().union(*(ngrams(t) for t in trained))
    assert {t: sorted(ngrams(t) & trained_grams) for t in natural if ngrams(t) & trained_grams} == {}


def weights_digest(path: Path) -> str:
    tensors = load_file(path / "model.safetensors")
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def two_small_builds(tmp_path_factory) -> tuple[Path, Path]:
    """The same few-step build twice: once through the function, once through the module's command line."""
    root = tmp_path_factory.mktemp("tiny")
    build_tiny_model(root / "a", steps=6)
    assert main(["--output", str(root / "b"), "--steps", "6"]) == 0
    return root / "a", root / "b"


def test_builder_is_deterministic_and_records_digests(two_small_builds):
    a, b = two_small_builds
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert weights_digest(a) == weights_digest(b)
    meta = json.loads((a / METADATA_FILE).read_text())
    assert meta["steps"] == 6 and meta["version"] == TINY_VERSION
    assert verify_tiny_model(a) == []
    (a / "config.json").write_text((a / "config.json").read_text() + "\n")
    assert verify_tiny_model(a) == ["config.json"]  # the digests catch a changed file


def test_a_small_build_loads_and_generates(two_small_builds):
    _, b = two_small_builds
    assert is_built(b)
    engine = Engine(EngineConfig(model=str(b), backend="hf"))
    try:
        out = engine.generate([GenerationRequest("Once upon a time", SamplingParams(max_tokens=5, ignore_eos=True))])
        assert out[0].completion_tokens == 5 and out[0].finish_reason == "length"
    finally:
        engine.close()


def test_bundled_examples_stay_held_out():
    """examples/reviews.jsonl's generated rows use products and templates that no training text contains."""
    trained = "\n".join(trained_texts()).lower()
    assert [p for p in HELD_OUT_PRODUCTS if re.search(rf"\b{p}", trained)] == []
    fragments = [f.strip(" .,:").lower() for t in HELD_OUT_TEMPLATES for f in re.split(r"\{\w+\}", t)]
    assert [f for f in fragments if len(f.split()) >= 2 and f in trained] == []
