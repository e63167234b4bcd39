"""A compositional grammar of product reviews in everyday phrasing, so phi4-tiny learns more than one template.

A review is an optional opener (who bought what, when), one to three sentiment-bearing sentences and an
optional verdict. Sentiment sentences combine aspects, intensifiers, negation ("not bad", "not worth it"),
events ("stopped working after a week"), comparisons, anecdotes about other people, and reviews that
mention a drawback but clearly lean one way. Surface noise (lower case, missing full stops, exclamation
marks, the odd typo) keeps the model from keying on formatting.

Products exclude ``corpus.HELD_OUT_PRODUCTS`` so that the bundled examples stay held out. The lexicon is
written for this project (no external word list was copied).
"""

from __future__ import annotations

import random
from collections.abc import Callable

PRODUCTS = (
    "vacuum", "blender", "kettle", "toaster", "coffee maker", "grinder", "air fryer", "rice cooker", "pan", "pot",
    "knife set", "cutting board", "water bottle", "mug", "lunch box", "backpack", "bag", "wallet", "jacket",
    "hoodie", "dress", "jeans", "boots", "running shoes", "sandals", "socks", "hat", "gloves", "watch",
    "phone", "phone case", "charger", "cable", "power bank", "laptop", "monitor", "keyboard", "mouse",
    "headphones", "earbuds", "speaker", "soundbar", "tv", "remote", "router", "printer", "camera", "tripod",
    "lamp", "desk lamp", "chair", "office chair", "desk", "shelf", "bookcase", "mattress", "pillow", "blanket",
    "sheets", "towels", "curtains", "rug", "fan", "heater", "humidifier", "air purifier", "tent", "sleeping bag",
    "bike", "helmet", "bike lock", "yoga mat", "dumbbells", "treadmill", "stroller", "car seat", "toy", "puzzle",
    "board game", "book", "drill", "screwdriver set", "ladder", "hose", "lawn mower", "grill", "cooler",
    "umbrella", "mirror", "hair dryer", "razor", "toothbrush", "scale", "baby monitor", "dog bed", "cat tree",
    "leash", "litter box", "smart plug", "doorbell", "light bulbs", "batteries",
)  # fmt: skip
PEOPLE = (
    "my wife", "my husband", "my son", "my daughter", "my kids", "my mom", "my dad", "my partner",
    "my sister", "my brother", "my roommate", "my grandma", "my boss", "a friend", "my teenager", "my dog",
)  # fmt: skip
DURATIONS = (
    "two days", "a week", "ten days", "two weeks", "a month", "three months", "six months", "a year",
    "a few uses", "one use", "the first day", "about an hour", "a couple of weeks", "the second wash",
)  # fmt: skip
ASPECTS = (
    "the quality", "the build", "the material", "the fit", "the battery", "the sound", "the picture",
    "the screen", "the price", "the design", "the handle", "the lid", "the zipper", "the motor", "the app",
    "the stitching", "the packaging", "setup", "delivery", "customer support", "the instructions", "the color",
    "the size", "the finish", "the buttons", "the cord", "the strap", "the suction", "the fabric", "assembly",
)  # fmt: skip
INTENSIFIERS = ("", "", "really ", "very ", "super ", "so ", "extremely ", "pretty ", "incredibly ", "truly ")
STRONG = ("really ", "very ", "so ", "super ", "extremely ", "way too ", "incredibly ")

POSITIVE_ADJ = (
    "great", "good", "excellent", "amazing", "awesome", "solid", "sturdy", "comfortable", "comfy", "reliable",
    "well made", "fast", "quiet", "sharp", "bright", "soft", "durable", "beautiful", "lovely", "perfect",
    "fantastic", "impressive", "easy to use", "easy to clean", "worth it", "cute", "stylish", "smooth",
    "powerful", "dependable", "handy", "nice", "sleek", "well designed", "high quality", "a great value",
    "sturdy enough", "fun", "cozy", "accurate", "lightweight", "responsive", "crisp", "gorgeous", "brilliant",
)  # fmt: skip
NEGATIVE_ADJ = (
    "terrible", "awful", "horrible", "bad", "poor", "cheap", "flimsy", "broken", "useless", "loud",
    "noisy", "slow", "weak", "uncomfortable", "unreliable", "defective", "faulty", "overpriced", "fragile",
    "ugly", "scratchy", "clunky", "wobbly", "sticky", "dull", "blurry", "itchy", "stiff", "leaky",
    "disappointing", "frustrating", "annoying", "junk", "garbage", "a joke", "a waste of money", "pathetic",
    "badly made", "poorly made", "too small", "too big", "flimsy plastic", "a nightmare", "a ripoff", "worthless",
)  # fmt: skip
NEUTRAL_ADJ = (
    "okay", "fine", "average", "alright", "decent enough", "ordinary", "acceptable", "standard", "so-so",
    "basic", "nothing special", "about what you would expect", "fair for the price", "unremarkable", "adequate",
)  # fmt: skip
POSITIVE_EVENTS = (
    "it works perfectly", "it does exactly what I need", "it has never let me down", "it works like a charm",
    "it arrived early and well packed", "it was easy to put together", "it still works like new",
    "it charges quickly", "it holds up well", "it fits perfectly", "it saves me so much time",
    "it keeps everything cold all day", "it heats up in seconds", "it cleans up in no time",
    "I use it every day", "I have had zero issues", "I have no complaints", "everything works as promised",
    "it survived a drop without a scratch", "it looks even better in person", "it paid for itself",
    "I sleep so much better now", "it made my life easier", "I keep reaching for it",
)  # fmt: skip
NEGATIVE_EVENTS = (
    "it stopped working", "it broke", "it fell apart", "it cracked", "it died", "the button snapped off",
    "the handle came loose", "it started leaking", "it quit charging", "the seams ripped", "the paint peeled",
    "it overheated", "it started making a grinding noise", "it would not turn on", "the screen flickered",
    "it kept disconnecting", "the motor burned out", "the strap tore", "the color washed out", "it rusted",
)  # fmt: skip
NEGATIVE_PROBLEMS = (
    "it arrived damaged", "parts were missing", "it came with a dent", "it smells like chemicals",
    "it does not fit", "it keeps jamming", "it keeps crashing", "it never worked properly",
    "it does not do what the listing says", "the seller never replied", "the refund took weeks",
    "it is nothing like the photos", "it shrank in the wash", "the lid does not seal", "it tips over",
    "it drains the battery", "the instructions make no sense", "it wobbles", "it pills after one wash",
)  # fmt: skip
POSITIVE_VERDICTS = (
    "Highly recommend.", "Would buy again.", "Five stars.", "Love it.", "Very happy with it.", "Worth every cent.",
    "Ten out of ten.", "Buy it, you will not regret it.", "I would recommend it to anyone.", "So glad I got it.",
    "Best money I have spent in a while.", "A keeper.", "Great buy.", "Very satisfied.", "No regrets.",
    "Will be ordering another one.", "Thumbs up.", "Can't recommend it enough.", "Really pleased.",
)  # fmt: skip
NEGATIVE_VERDICTS = (
    "Do not buy.", "Avoid.", "One star.", "Returning it.", "Sent it back.", "Never again.", "Save your money.",
    "Would not recommend.", "I want my money back.", "Zero stars if I could.", "Huge letdown.", "Not impressed.",
    "Very unhappy.", "Stay away.", "Regret buying it.", "What a waste.", "Look elsewhere.", "Thumbs down.",
    "Big disappointment.", "Asked for a refund.",
)  # fmt: skip
NEUTRAL_VERDICTS = (
    "Three stars.", "It is fine, I guess.", "No strong feelings.", "It does the job.", "Middle of the road.",
    "Neither good nor bad.", "Fine for now.", "It is what it is.",
)  # fmt: skip
LOVE = ("love", "really love", "absolutely love", "like", "really like", "adore", "enjoy")
HATE = ("hate", "really hate", "dislike", "can't stand", "regret buying", "am sick of")
COMPARED = (
    "my old one", "the last one I had", "the expensive brands", "what I had before", "the one in the store",
    "my previous {p}", "the name brand", "the ones my friends have",
)  # fmt: skip
OPENERS = (
    "Bought this {p} for {person}.", "Got the {p} {when}.", "Ordered this {p} after my old one died.",
    "Been using this {p} for {d}.", "Picked up this {p} on sale.", "I needed a new {p} and went with this one.",
    "This is my second {p} from this brand.", "Got this {p} as a gift.", "We have had this {p} for {d} now.",
    "Bought the {p} to replace a cheaper one.", "Needed a {p} for a trip.", "Ok so I finally tried this {p}.",
    "Quick review of the {p}.", "Update after {d}:", "First time buying a {p} online.",
)  # fmt: skip
# Facts with no sentiment, added to reviews of every label: unfamiliar content must not hint at a label.
FILLERS = (
    "It came in a plain cardboard box.", "I mostly use it on weekends.", "Mine is the {color} one.",
    "We keep it in the {room}.", "I use it for work.", "Delivery took {n} days.", "I paid about {n}0 dollars.",
    "It replaced an older model.", "{Person} picked the color.", "I ordered the {color} version.",
    "It is the {size} size.", "I use it twice a week.", "This is for the {room}.", "The box had a manual inside.",
    "I got it from the online store.", "It runs on batteries.", "It needs a wall plug.",
    "The model number is on the back.",
    "I compared a few before picking this one.", "It weighs about {n} pounds.",
)  # fmt: skip
COLORS = ("black", "white", "grey", "blue", "red", "green", "silver", "pink")
ROOMS = ("kitchen", "garage", "bedroom", "office", "living room", "basement", "car", "dorm")
SIZES = ("small", "medium", "large", "standard", "travel")
# Label-agnostic frames: the same sentence shapes for every label, so only the sentiment word decides.
FRAMES = (
    "{W}.", "{W} {p}.", "A {w} {p}.", "What a {w} {p}.", "So {w}.", "{W}, {w2}.", "Really {w}.",
    "I found the {p} {w}.", "It feels {w}.", "It seems {w}.", "It looks {w} to me.", "My {p} is {w}.",
    "Our new {p} is {w}.", "The {p}? {W}.", "{W}, that is the word for it.", "Verdict: {w}.", "Rating: {w}.",
    "One word: {w}.", "Pretty {w} {p}.", "The whole thing is {w}.", "Everything about it is {w}.",
    "I think it is {w}.", "It has been {w} so far.", "Day one: {w}.", "{W} product.", "Very {w} purchase.",
    "The {p} I got is {w}, {w2} too.", "Kind of {w}, to be honest.", "It came out {w}.", "It is a {w} one.",
    "{W} and {w2}.", "Such a {w} {p}!", "Definitely {w}.", "Used it today, {w}.", "Thought it was {w}.",
    "Overall: {w}.", "My take: {w} {p}.", "Got a {w} {p} here.", "The {p} from this shop is {w}.",
    "Bought a {p}. {W}.", "{W} {p}, {w2} price.", "It was {w} from the start.",
)  # fmt: skip
# Label-agnostic lead-ins for framed reviews: new sentence beginnings that carry no sentiment.
LEAD_INS = (
    "Well,", "So,", "Okay,", "Hmm.", "Quick note:", "Real talk:", "After some use,", "To sum up,", "Bottom line:",
    "Long story short,", "For what it is worth,", "All in all,", "Put simply,", "Straight up,", "My opinion:",
    "Having tried it,", "Now that I have used it,", "Fair to say,", "Truth be told,", "At this point,",
)  # fmt: skip
WHEN = ("last week", "a month ago", "for Christmas", "on sale", "yesterday", "for my birthday", "in the spring")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(rng: random.Random, template: str, product: str) -> str:
    person = rng.choice(PEOPLE)
    return template.format(
        p=product,
        person=person,
        Person=_cap(person),
        when=rng.choice(WHEN),
        d=rng.choice(DURATIONS),
        a=rng.choice(ASPECTS),
        color=rng.choice(COLORS),
        room=rng.choice(ROOMS),
        size=rng.choice(SIZES),
        n=rng.randrange(2, 10),
    )


def _subject(rng: random.Random, product: str) -> str:
    return rng.choice(("it", "this thing", f"the {product}", f"this {product}", "it", "the whole thing"))


def _positive_core(rng: random.Random, p: str) -> str:
    adj, neg = rng.choice(POSITIVE_ADJ), rng.choice(NEGATIVE_ADJ)
    options: tuple[Callable[[], str], ...] = (
        lambda: f"{_cap(_subject(rng, p))} is {rng.choice(INTENSIFIERS)}{adj}.",
        lambda: f"{_cap(rng.choice(ASPECTS))} is {rng.choice(INTENSIFIERS)}{adj}.",
        lambda: f"{_cap(rng.choice(POSITIVE_EVENTS))}.",
        lambda: f"I {rng.choice(LOVE)} {rng.choice(('it', 'this', f'this {p}', 'mine'))}.",
        lambda: f"{_cap(rng.choice(PEOPLE))} {rng.choice(('loves', 'likes', 'is thrilled with', 'uses'))} it.",
        lambda: f"Not {neg} at all.",
        lambda: f"{_cap(_subject(rng, p))} is not {neg}, it is {adj}.",
        lambda: f"Way better than {_fill(rng, rng.choice(COMPARED), p)}.",
        lambda: f"Honestly {adj}, {rng.choice(('no complaints', 'zero issues', 'no problems so far'))}.",
        lambda: f"{_cap(rng.choice(POSITIVE_EVENTS))} even after {rng.choice(DURATIONS)}.",
        lambda: f"Never had a problem with {rng.choice(('it', 'the ' + p))}.",
        lambda: f"Exactly what I {rng.choice(('needed', 'wanted', 'was looking for'))}.",
    )
    return rng.choice(options)()


def _negative_core(rng: random.Random, p: str) -> str:
    adj, pos = rng.choice(NEGATIVE_ADJ), rng.choice(POSITIVE_ADJ)
    options: tuple[Callable[[], str], ...] = (
        lambda: f"{_cap(_subject(rng, p))} is {rng.choice(INTENSIFIERS)}{adj}.",
        lambda: f"{_cap(rng.choice(ASPECTS))} is {rng.choice(INTENSIFIERS)}{adj}.",
        lambda: f"{_cap(rng.choice(NEGATIVE_EVENTS))} after {rng.choice(DURATIONS)}.",
        lambda: f"{_cap(rng.choice(NEGATIVE_PROBLEMS))}.",
        lambda: f"I {rng.choice(HATE)} {rng.choice(('it', 'this', f'this {p}'))}.",
        lambda: f"{_cap(rng.choice(PEOPLE))} {rng.choice(('hates', 'gave up on', 'refuses to use'))} it.",
        lambda: f"Not {pos} at all.",
        lambda: f"{_cap(_subject(rng, p))} is not {pos}.",
        lambda: f"{_cap(_subject(rng, p))} is {rng.choice(('not worth it', 'not worth the money', 'not good'))}.",
        lambda: f"Much worse than {_fill(rng, rng.choice(COMPARED), p)}.",
        lambda: f"{_cap(_subject(rng, p))} {rng.choice(('does not', 'doesnt', 'never'))} work properly.",
        lambda: f"Nothing like what I {rng.choice(('expected', 'paid for', 'was promised'))}.",
    )
    return rng.choice(options)()


def _neutral_core(rng: random.Random, p: str) -> str:
    adj = rng.choice(NEUTRAL_ADJ)
    options: tuple[Callable[[], str], ...] = (
        lambda: f"{_cap(_subject(rng, p))} is {adj}.",
        lambda: f"{_cap(rng.choice(ASPECTS))} is {adj}.",
        lambda: (
            f"{_cap(rng.choice(ASPECTS))} is {rng.choice(POSITIVE_ADJ)} but {rng.choice(ASPECTS)} is "
            f"{rng.choice(NEGATIVE_ADJ)}."
        ),
        lambda: "Does the job, nothing more, nothing less.",
        lambda: f"Not great, not terrible, just {adj}.",
    )
    return rng.choice(options)()


def _leaning(rng: random.Random, p: str, label: str) -> str:
    """A drawback (or a plus) conceded, then the sentiment that decides the label."""
    if label == "positive":
        minor = f"{_cap(rng.choice(ASPECTS))} could be better"
        if rng.random() < 0.5:
            minor = f"{_cap(rng.choice(ASPECTS))} is a bit {rng.choice(('loud', 'stiff', 'small', 'slow', 'heavy'))}"
        core = _positive_core(rng, p)
        return f"{minor}, but {core[0].lower()}{core[1:]}"
    minor = f"{_cap(rng.choice(ASPECTS))} is {rng.choice(('nice', 'fine', 'pretty', 'okay', 'cute'))}"
    if rng.random() < 0.5:
        minor = f"It looked {rng.choice(('great', 'nice', 'good'))} at first"
    core = _negative_core(rng, p)
    return f"{minor}, but {core[0].lower()}{core[1:]}"


CORES: dict[str, Callable[[random.Random, str], str]] = {
    "positive": _positive_core,
    "negative": _negative_core,
    "neutral": _neutral_core,
}
VERDICTS = {"positive": POSITIVE_VERDICTS, "negative": NEGATIVE_VERDICTS, "neutral": NEUTRAL_VERDICTS}


def _noise(rng: random.Random, text: str) -> str:
    """Casual surface: lower case, dropped final stop, '!' or a swapped-letter typo now and then."""
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.22 and text.endswith("."):
        text = text[:-1]
    elif r < 0.3:
        text = text.replace(".", "!", 1)
    if rng.random() < 0.08:
        words = text.split(" ")
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 4:
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        text = " ".join(words)
    return text


def natural_review(rng: random.Random, label: str) -> tuple[str, str]:
    """(text, product): opener?, 1-3 sentences carrying ``label``, verdict?."""
    product = rng.choice(PRODUCTS)
    parts = []
    if rng.random() < 0.45:
        parts.append(_fill(rng, rng.choice(OPENERS), product))
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        if label != "neutral" and rng.random() < 0.12:
            parts.append(_leaning(rng, product, label))
        else:
            parts.append(CORES[label](rng, product))
        if rng.random() < 0.25:
            parts.insert(rng.randrange(len(parts) + 1), _fill(rng, rng.choice(FILLERS), product))
    if rng.random() < 0.45:
        parts.append(rng.choice(VERDICTS[label]))
    return _noise(rng, " ".join(parts)), product


def framed_review(rng: random.Random, label: str, words: tuple[str, ...]) -> tuple[str, str]:
    """(text, product): a label-agnostic frame around sentiment ``words``, with a filler fact now and then."""
    product = rng.choice(PRODUCTS)
    w, w2 = (x.replace("-", " ") for x in rng.sample(words, 2))
    text = rng.choice(FRAMES).format(p=product, w=w, w2=w2, W=_cap(w))
    if rng.random() < 0.35:
        text = f"{rng.choice(LEAD_INS)} {text[0].lower()}{text[1:]}"
    if rng.random() < 0.3:
        filler = _fill(rng, rng.choice(FILLERS), product)
        text = f"{filler} {text}" if rng.random() < 0.5 else f"{text} {filler}"
    return _noise(rng, text), product
