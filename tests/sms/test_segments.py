"""SMS encoding and segments: GSM-7 against UCS-2, and where a text needs one more segment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from widget_server.sms.segments import GSM_BASIC, GSM_EXTENSION, measure

basic = st.text(alphabet=sorted(GSM_BASIC), max_size=500)
gsm = st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENSION), max_size=500)
foreign = st.characters(
    blacklist_characters=sorted(GSM_BASIC | GSM_EXTENSION), blacklist_categories=("Cs",)
)


@given(basic)
def test_basic_characters_are_gsm_and_one_septet_each(text: str) -> None:
    size = measure(text)
    assert size.encoding == "GSM-7"
    assert size.units == len(text) == size.characters


@given(gsm, foreign, st.integers(min_value=0, max_value=500))
def test_one_character_outside_gsm_makes_it_ucs2(text: str, odd: str, at: int) -> None:
    at = min(at, len(text))
    assert measure(text[:at] + odd + text[at:]).encoding == "UCS-2"


@given(gsm, gsm)
def test_segments_never_shrink_as_the_text_grows(text: str, more: str) -> None:
    assert measure(text + more).segments >= measure(text).segments


@given(st.text(max_size=400), st.text(max_size=400))
def test_segments_monotone_in_any_text(text: str, more: str) -> None:
    assert measure(text + more).segments >= measure(text).segments


def test_exact_gsm_boundaries() -> None:
    assert measure("a" * 160).segments == 1
    assert measure("a" * 161).segments == 2
    assert measure("a" * 306).segments == 2
    assert measure("a" * 307).segments == 3
    assert measure("").segments == 1


def test_extension_characters_take_two_septets() -> None:
    assert measure("€" * 80).units == 160 and measure("€" * 80).segments == 1
    assert measure("€" * 81).segments == 2
    assert measure("a" + "^" * 80).segments == 2  # 161 septets
    # A part holds 153 septets; an escape pair is never split between parts.
    assert measure("a" * 152 + "{" + "a" * 10).segments == 2
    assert measure("a" * 152 + "{" + "a" * 152).segments == 3
    assert measure("\f").units == 2


def test_exact_ucs2_boundaries() -> None:
    assert measure("ж" * 70).segments == 1
    assert measure("ж" * 71).segments == 2
    assert measure("ж" * 134).segments == 2
    assert measure("ж" * 135).segments == 3
    assert measure("ж" * 70).encoding == "UCS-2"


def test_emoji_count_two_code_units() -> None:
    size = measure("😀" * 35)
    assert (size.encoding, size.units, size.characters, size.segments) == ("UCS-2", 70, 35, 1)
    assert measure("😀" * 36).segments == 2
    assert measure("a" * 66 + "😀").segments == 1  # 68 units: one message
    assert measure("a" * 66 + "😀" + "a" * 4).segments == 2  # the emoji starts part two
