"""Regenerate examples/reviews.jsonl: held-out-template reviews plus hand-written ones.

The generated rows use sentence templates and products the tiny model never saw in training; the
hand-written rows are free-form. Every row has an id, the text, and the expected label.
"""

import json
from pathlib import Path

from phifleet.engine.tiny.corpus import reviews

HANDWRITTEN = [
    ("I love this phone, the battery lasts two days and the screen is gorgeous.", "positive"),
    ("Stopped working after a week. Total waste of money, I want a refund.", "negative"),
    ("It does what it says. Nothing special, nothing bad.", "neutral"),
    ("Best purchase I made this year, my whole family enjoys it.", "positive"),
    ("The handle cracked on the first day and support never answered.", "negative"),
    ("Average coffee maker, the coffee is fine and it is a bit loud.", "neutral"),
    ("Fast shipping and the kettle is perfect. Highly recommend!", "positive"),
    ("Cheap plastic, flimsy buttons, and it arrived damaged.", "negative"),
    ("The chair is okay for the price, a standard office chair.", "neutral"),
    ("Absolutely fantastic sound, my new favourite speaker.", "positive"),
    ("Horrible experience, the charger overheated and smelled of burning.", "negative"),
    ("Ordinary backpack. Typical size, usual pockets.", "neutral"),
    ("Excellent build quality and really comfortable to wear all day.", "positive"),
    ("Useless app, the camera keeps disconnecting. Avoid.", "negative"),
    ("Decent lamp, reasonable light, simple design.", "neutral"),
    ("Wonderful little blender, smooth smoothies in seconds.", "positive"),
    ("Terrible customer service and the vacuum is noisy and slow.", "negative"),
    ("The tent is acceptable. Setup was as expected.", "neutral"),
    ("Superb keyboard, quiet keys and a sleek look.", "positive"),
    ("The zipper broke and the jacket leaks in the rain. Very disappointed.", "negative"),
    ("Middling performance, a fair monitor for everyday use.", "neutral"),
    ("Brilliant camera, the pictures are stunning and sharp.", "positive"),
    ("Defective on arrival, would not turn on. Returning it.", "negative"),
    ("It is alright. A plain and functional mouse.", "neutral"),
]


def main() -> None:
    rows = [{"text": r.text, "label": r.label} for r in reviews(276, seed=2025, held_out=True)]
    rows += [{"text": t, "label": label} for t, label in HANDWRITTEN]
    out = Path(__file__).with_name("reviews.jsonl")
    with out.open("w") as fh:
        for i, row in enumerate(rows, 1):
            fh.write(json.dumps({"id": f"review-{i:04d}", **row}) + "\n")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
