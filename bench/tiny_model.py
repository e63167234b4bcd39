"""How well the shipped phi4-tiny labels, measured: the README and the tests quote this table.

Label scoring (what `phifleet label` and `/v1/classify` do) on the two bundled sets, with the label orders the
product uses, on both backends (DeepSpeed-prepared and plain transformers): `examples/reviews.jsonl` (300
generated reviews, templates and products held out of training, three labels) and
`examples/natural_reviews.jsonl` (hand-written reviews in people's own words, never trained on, two labels).
The margin column is the smallest gap, over correctly labelled rows, between the right label's probability and
the best wrong one's: how far float differences between CPUs would have to move a score to flip an answer.

Writes bench/results/tiny_model.md. Run: `python bench/tiny_model.py` (about 20 s on one CPU thread).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from phifleet.engine import Engine, EngineConfig
from phifleet.engine.prompts import classification_prompt
from phifleet.engine.tiny.build import METADATA_FILE, tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tiny_model.md"
SETS = [
    ("examples/reviews.jsonl", ["positive", "negative", "neutral"]),
    ("examples/natural_reviews.jsonl", ["positive", "negative"]),
    ("examples/natural_reviews.jsonl", ["negative", "positive"]),
]


def evaluate(engine: Engine, path: str, labels: list[str]) -> dict[str, object]:
    rows = [json.loads(line) for line in (ROOT / path).read_text().splitlines() if line.strip()]
    scores = engine.score_labels([classification_prompt(r["text"], labels) for r in rows], labels)
    right = [s for s, r in zip(scores, rows, strict=True) if s.label == r["label"]]
    margins = [
        s.probabilities[s.label] - max(p for label, p in s.probabilities.items() if label != s.label) for s in right
    ]
    return {"rows": len(rows), "correct": len(right), "margin": min(margins) if margins else 0.0}


def main() -> None:
    torch.set_num_threads(1)
    meta = json.loads((tiny_model_dir() / METADATA_FILE).read_text())
    lines = [
        "# phi4-tiny: labelling accuracy",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, 1 thread. Produced by `bench/tiny_model.py`.",
        f"Model: the shipped phi4-tiny v{meta['version']} ({meta['parameters']:,} parameters, "
        f"{meta['steps']} training steps, built in {meta['build_seconds']:.0f} s on one thread).",
        "",
        "| set | labels | backend | rows | correct | accuracy | smallest winning margin |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in ("deepspeed", "hf"):
        engine = Engine(EngineConfig(backend=backend))
        for path, labels in SETS:
            r = evaluate(engine, path, labels)
            accuracy = r["correct"] / r["rows"]
            lines.append(
                f"| `{path}` | {', '.join(labels)} | {backend} | {r['rows']} | {r['correct']} | {accuracy:.1%} "
                f"| {r['margin']:.3f} |"
            )
            print(lines[-1], flush=True)
        engine.close()
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
