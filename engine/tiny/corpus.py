"""The reviews phi4-tiny learns from: three sources mixed, so it labels more than one phrasing.

- The template family (``TRAIN_TEMPLATES``): short one-line reviews over a fixed sentiment vocabulary,
  three labels. ``reviews(held_out=True)`` draws from disjoint templates and products: that is how
  ``examples/make_reviews.py`` made the bundled examples, which therefore stay held out.
- The grammar (``grammar.py``): multi-sentence reviews in everyday phrasing with negation,
  intensifiers, events, comparisons and concessions; and label-agnostic frames around sentiment words.
- Hand-written reviews (``handwritten.py``).

Half the reviews also get made-up words (as the product, or inserted): without them the model read any
unfamiliar phrasing as negative. Version 1 trained on the template family alone: 71% on
``examples/natural_reviews.jsonl``, against 81% for version 2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from phifleet.engine.tiny import grammar, handwritten

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


# Share of each source in training; the rest is the grammar. Handwritten rows repeat (there are ~90).
TEMPLATE_SHARE = 0.3
FRAMED_SHARE = 0.25
HANDWRITTEN_SHARE = 0.07
HANDWRITTEN: dict[str, tuple[str, ...]] = {
    "positive": handwritten.POSITIVE,
    "negative": handwritten.NEGATIVE,
    "neutral": handwritten.NEUTRAL,
}

FRAMED_WORDS: dict[str, tuple[str, ...]] = {
    "positive": SENTIMENT_WORDS["positive"] + grammar.POSITIVE_ADJ,
    "negative": SENTIMENT_WORDS["negative"] + grammar.NEGATIVE_ADJ,
    "neutral": SENTIMENT_WORDS["neutral"] + grammar.NEUTRAL_ADJ,
}


NONCE_SHARE = 0.5  # reviews whose product becomes a made-up word, or that get made-up words inserted
SYLLABLES = ("ba", "ko", "ri", "mu", "te", "za", "lo", "ven", "dri", "sul", "po", "gar", "ni", "fex", "tor", "qui")


def _nonce(rng: random.Random) -> str:
    """A made-up word: syllables, or random letters (which split into all sorts of rarely seen tokens)."""
    if rng.random() < 0.5:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))


def _with_nonce(rng: random.Random, review: Review) -> Review:
    """Made-up words in reviews of every label: words the model never saw must not hint at a label.

    Without this, v2's first builds read unfamiliar phrasing (new products, new sentence frames) as negative.
    """
    text = review.text
    if review.product in text and rng.random() < 0.5:
        nonce = _nonce(rng)  # the made-up word is now the product (what an extraction must find)
        return Review(text.replace(review.product, nonce), review.label, nonce)
    words = text.split(" ")
    phrase = " ".join(_nonce(rng) for _ in range(rng.randint(1, 3)))
    words.insert(rng.randrange(len(words) + 1), phrase)
    return Review(" ".join(words), review.label, review.product)


def _mixed_review(rng: random.Random, label: str) -> Review:
    review = _source_review(rng, label)
    return _with_nonce(rng, review) if rng.random() < NONCE_SHARE else review


def _source_review(rng: random.Random, label: str) -> Review:
    r = rng.random()
    if r < TEMPLATE_SHARE:
        return _review(rng, TRAIN_TEMPLATES, TRAIN_PRODUCTS, label)
    if r < TEMPLATE_SHARE + FRAMED_SHARE:
        text, product = grammar.framed_review(rng, label, FRAMED_WORDS[label])
        return Review(text, label, product)
    if r < TEMPLATE_SHARE + FRAMED_SHARE + HANDWRITTEN_SHARE:
        return Review(rng.choice(HANDWRITTEN[label]), label, "product")
    text, product = grammar.natural_review(rng, label)
    return Review(text, label, product)


def training_reviews(n: int, seed: int) -> list[Review]:
    """n training reviews, labels balanced, drawn from the three sources."""
    rng = random.Random(seed)
    return [_mixed_review(rng, LABELS[i % len(LABELS)]) for i in range(n)]
