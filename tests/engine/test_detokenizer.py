"""Incremental detokenization with the real tiny tokenizer (byte-level BPE, so characters split over tokens)."""

from phifleet.engine.detokenizer import IncrementalDetokenizer


def feed(engine, text: str, stop=()):
    detok = IncrementalDetokenizer(engine.tokenizer, stop)
    deltas = []
    for tok in engine.encode(text):
        detok.add(tok)
        deltas.append(detok.delta())
        if detok.stopped:
            break
    deltas.append(detok.delta(final=True))
    return detok, deltas


def test_multibyte_characters_never_stream_half_decoded(engine):
    text = "Café ☕ naïve 日本 🙂 ok"
    detok, deltas = feed(engine, text)
    assert len(engine.encode("☕")) > 1  # the property under test: one character, several tokens
    assert "".join(deltas) == text == detok.text
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_split_over_tokens_is_cut_and_never_emitted(engine):
    assert len(engine.encode(" junk,")) > 1
    detok, deltas = feed(engine, "The kettle works and it is junk, junk even.", stop=("junk,",))
    assert detok.stopped
    assert detok.text == "The kettle works and it is "
    assert "".join(deltas) == detok.text
    assert not any("ju" in d for d in deltas)


def test_prefix_of_stop_is_released_when_it_turns_out_not_to_stop(engine):
    detok, deltas = feed(engine, "a junkyard", stop=("junk!",))
    assert not detok.stopped
    assert "".join(deltas) == "a junkyard"


def test_earliest_of_several_stops_wins(engine):
    detok, _ = feed(engine, "one two three four", stop=("four", "two"))
    assert detok.text == "one "


def test_held_back_tail_is_the_longest_that_can_still_become_a_stop_string(engine):
    """The scan tries only positions holding a stop string's first character; it must still find the longest."""
    detok = IncrementalDetokenizer(engine.tokenizer, ("aab!", "b?"))
    detok.text = "xxaab"
    assert detok._held_back() == 3  # "aab" may become "aab!"; "b" alone would be shorter
    detok.text = "xxaaxb"
    assert detok._held_back() == 1
    long_stop = IncrementalDetokenizer(engine.tokenizer, ("a" * 255 + "b",))
    long_stop.text = "a" * 300
    assert long_stop._held_back() == 255
