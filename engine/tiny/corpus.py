"""Generated product reviews that teach the tiny model to label sentiment and to write reviews.

Training and held-out reviews come from disjoint sentence templates and disjoint product nouns, so
held-out accuracy measures generalisation to new phrasings. The sentiment vocabulary is shared: a
model cannot know the polarity of a word it has never seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LABELS = ("positive", "negative", "neutral")

SENTIMENT_WORDS: dict[str, tuple[str, ...]] = {
    "positive": (
        "excellent",
        "great",
        "fantastic",
        "wonderful",
        "amazing",
        "superb",
        "outstanding",
        "brilliant",
        "perfect",
        "lovely",
        "delightful",
        "impressive",
        "reliable",
        "sturdy",
        "beautiful",
        "awesome",
        "terrific",
        "marvelous",
        "splendid",
        "flawless",
        "pleasant",
        "solid",
        "sleek",
        "durable",
        "elegant",
        "remarkable",
        "exceptional",
        "fabulous",
        "stellar",
        "comfortable",
        "handy",
        "superior",
        "charming",
        "gorgeous",
        "smooth",
        "efficient",
        "fast",
        "quiet",
        "useful",
        "good",
        "nice",
        "incredible",
        "phenomenal",
        "exquisite",
        "top-notch",
        "love",
        "best",
        "happy",
        "recommend",
        "satisfied",
        "pleased",
        "glad",
        "enjoy",
    ),
    "negative": (
        "terrible",
        "awful",
        "horrible",
        "broken",
        "useless",
        "disappointing",
        "poor",
        "cheap",
        "flimsy",
        "defective",
        "faulty",
        "bad",
        "worst",
        "annoying",
        "frustrating",
        "noisy",
        "slow",
        "unreliable",
        "dreadful",
        "pathetic",
        "shoddy",
        "junk",
        "garbage",
        "worthless",
        "inferior",
        "unusable",
        "dangerous",
        "overpriced",
        "leaky",
        "fragile",
        "ugly",
        "rubbish",
        "lousy",
        "mediocre-at-best",
        "atrocious",
        "abysmal",
        "miserable",
        "damaged",
        "cracked",
        "hate",
        "regret",
        "refund",
        "return",
        "waste",
        "avoid",
        "unhappy",
        "angry",
        "disappointed",
        "failed",
        "stopped",
        "sticky",
    ),
    "neutral": (
        "okay",
        "average",
        "fine",
        "acceptable",
        "ordinary",
        "standard",
        "typical",
        "adequate",
        "so-so",
        "unremarkable",
        "fair",
        "passable",
        "middling",
        "moderate",
        "reasonable",
        "plain",
        "basic",
        "decent",
        "usual",
        "normal",
        "regular",
        "common",
        "expected",
        "predictable",
        "functional",
        "serviceable",
        "alright",
        "mixed",
        "indifferent",
        "neither",
        "routine",
        "conventional",
        "modest",
        "tolerable",
        "simple",
        "generic",
        "sufficient",
        "unexceptional",
        "mid-range",
        "forgettable",
        "nothing-special",
        "meh",
        "as-described",
        "neutral",
        "workable",
    ),
}

TRAIN_PRODUCTS = (
    "blender",
    "kettle",
    "toaster",
    "laptop",
    "phone",
    "charger",
    "backpack",
    "jacket",
    "lamp",
    "chair",
    "desk",
    "mixer",
    "vacuum",
    "headset",
    "speaker",
    "camera",
    "monitor",
    "keyboard",
    "mouse",
    "router",
    "printer",
    "tent",
    "bicycle",
    "helmet",
    "watch",
    "wallet",
    "umbrella",
    "mattress",
    "pillow",
    "blanket",
    "pan",
    "knife",
    "stroller",
    "drill",
    "heater",
    "fan",
)
HELD_OUT_PRODUCTS = (
    "skillet",
    "tablet",
    "scooter",
    "thermos",
    "sofa",
    "projector",
    "sneakers",
    "microwave",
    "dishwasher",
    "suitcase",
    "guitar",
    "drone",
)

TRAIN_TEMPLATES = (
    "The {p} is {w}.",
    "This {p} is {w} and {w2}.",
    "I bought this {p} last month. It is {w}.",
    "{W} {p}, really {w2}.",
    "My {p} arrived yesterday and it looks {w}.",
    "Overall the {p} feels {w}.",
    "Quality of the {p}: {w}.",
    "I would call this {p} {w}.",
    "The {p} works and it is {w}, {w2} even.",
    "Got the {p} for my kitchen, {w}.",
    "After a week the {p} is {w}.",
    "Review of the {p}: {w}, {w2}.",
    "{W}. That is my verdict on the {p}.",
    "Five days in, the {p} seems {w}.",
)
HELD_OUT_TEMPLATES = (
    "Honestly, the {p} turned out {w}.",
    "We have used the {p} for months now and it stays {w}.",
    "Two words for this {p}: {w} and {w2}.",
    "If you ask me, the new {p} is {w}.",
    "Just unboxed the {p}. First impression: {w}.",
    "In short, a {w} {p}.",
)

WRITE_PROMPT = "Write a {label} review of a {product}."


@dataclass(frozen=True)
class Review:
    text: str
    label: str
    product: str


def _review(rng: random.Random, templates: tuple[str, ...], products: tuple[str, ...], label: str) -> Review:
    words = SENTIMENT_WORDS[label]
    w, w2 = rng.sample(words, 2)
    product = rng.choice(products)
    text = rng.choice(templates).format(
        p=product, w=w.replace("-", " "), w2=w2.replace("-", " "), W=w.replace("-", " ").capitalize()
    )
    return Review(text, label, product)


def reviews(n: int, seed: int, held_out: bool = False) -> list[Review]:
    """n reviews, labels balanced; held_out draws from templates and products unseen in training."""
    rng = random.Random(seed)
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    products = HELD_OUT_PRODUCTS if held_out else TRAIN_PRODUCTS
    return [_review(rng, templates, products, LABELS[i % len(LABELS)]) for i in range(n)]
