"""Campaign texts in several languages: picking the words, the protocol's locale, and real
WebSocket clients in different languages on a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widget_server.offers.campaigns import CampaignInvalid, Offer, parse_campaign
from widget_server.offers.texts import pick_word
from widget_server.wire import protocol as p

from ..support import (
    ROOT,
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    save_campaigns,
)

EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
TRANSLATED: dict[str, Any] = {
    "kind": "message",
    "headline": "Wait! 10% off",
    "body": "Only today.",
    "cta_label": "Get it",
    "translations": {
        "de": {"headline": "Warte! 10 % Rabatt", "body": "Nur heute.", "cta_label": "Holen"},
        "de-AT": {"headline": "Geh bitte! 10 % Rabatt"},
    },
}
MALFORMED = ["../", "x" * 500, "en_US", "de\n", "de\x00", "dé", "日本語", "DE", "", 7, None]
HOSTILE = ["xx-YY", *MALFORMED]  # xx-YY is well formed: kept, and no campaign has its texts


# --- picking the words --------------------------------------------------------------------------


def offer(**fields: Any) -> Offer:
    return Offer.model_validate({**TRANSLATED, **fields})


def test_words_follow_the_locale_then_its_language_then_the_base() -> None:
    o = offer()
    assert o.words("de").headline == "Warte! 10 % Rabatt"
    assert o.words("de").cta_label == "Holen"
    austrian = o.words("de-AT")
    assert austrian.headline == "Geh bitte! 10 % Rabatt"
    assert (austrian.body, austrian.cta_label) == ("Nur heute.", "Holen")  # from "de"
    assert o.words("de-CH").headline == "Warte! 10 % Rabatt"
    for other in ("fr", "en", "en-GB", ""):
        assert o.words(other).headline == "Wait! 10% off"
        assert o.words(other).body == "Only today."


def test_an_empty_translated_field_reads_as_the_base_text() -> None:
    o = offer(translations={"de": {"headline": "Warte!", "body": "  "}})
    words = o.words("de")
    assert (words.headline, words.body, words.cta_label) == ("Warte!", "Only today.", "Get it")


def test_the_two_step_buttons_are_translated_like_the_other_words() -> None:
    question = offer(kind="email_capture", two_step={"yes_label": "Yes, 10% off"},
                     translations={"de": {"yes_label": "Ja, 10 % sichern"},
                                   "fr": {"no_label": "Non merci"}})  # fmt: skip
    assert (question.words("de").yes_label, question.words("de").no_label) == (
        "Ja, 10 % sichern",
        "No, thanks",
    )  # the base's default no
    assert (question.words("fr-CA").yes_label, question.words("fr-CA").no_label) == (
        "Yes, 10% off",
        "Non merci",
    )
    assert offer().words("de").yes_label == ""  # no question: no buttons
    with pytest.raises(CampaignInvalid, match="at most 40 characters"):
        parse_campaign({"id": "q", "name": "q", "variants": [{"key": "a", "offer": {
            **TRANSLATED, "translations": {"de": {"no_label": "n" * 41}}}}]})  # fmt: skip


def test_a_german_visitor_gets_the_two_step_question_in_german(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    question = {"kind": "email_capture", "headline": "Want 10% off?",
                "two_step": {"yes_label": "Yes, 10% off", "no_label": "No"},
                "translations": {"de": {"headline": "10 % Rabatt?", "yes_label": "Ja, gern",
                                        "no_label": "Nein"}}}  # fmt: skip
    save_campaigns(server.redis_url, site, [
        message_campaign("ask", variants=[{"key": "a", "offer": question}])
    ])  # fmt: skip
    for lang, expected in (("de-DE", ("10 % Rabatt?", "Ja, gern", "Nein")),
                           ("en", ("Want 10% off?", "Yes, 10% off", "No"))):  # fmt: skip
        _, shown = exit_offer(server, site, lang)
        assert shown is not None
        assert (shown["headline"], shown["two_step"]["yes"], shown["two_step"]["no"]) == expected


def test_pick_word_ignores_malformed_locales() -> None:
    texts = {"de": "Hallo"}
    for bad in ("de\n", "../de", "de_AT", "d", "DE"):
        assert pick_word(texts, "Hello", bad) == "Hello"
    assert pick_word(texts, "Hello", "de-AT") == "Hallo"


def test_old_campaigns_load_unchanged() -> None:
    stored = json.dumps(message_campaign("old"))
    campaign = parse_campaign(stored)
    assert campaign.variants[0].offer.translations == {}
    assert campaign.variants[0].offer.words("de").headline == "Offer old"


def test_translations_obey_the_base_fields_limits() -> None:
    data = message_campaign("long")
    data["variants"][0]["offer"] = {**TRANSLATED, "translations": {
        "de": {"headline": "x" * 121, "body": "y" * 501, "cta_label": "z" * 41},
        "de_AT": {"headline": "Hallo"},
    }}  # fmt: skip
    with pytest.raises(CampaignInvalid) as caught:
        parse_campaign(data)
    paths = {e.path for e in caught.value.errors}
    assert {
        "variants.0.offer.translations.de.headline",
        "variants.0.offer.translations.de.body",
        "variants.0.offer.translations.de.cta_label",
    } <= paths
    assert any(path.startswith("variants.0.offer.translations.de_AT") for path in paths)


# --- the protocol's locale ----------------------------------------------------------------------


def hello(lang: object) -> dict[str, Any]:
    return {"id": "h1", "type": "hello", "v": 1, "site": "shop", "visitor": "v" * 22,
            "lang": lang}  # fmt: skip


@given(st.one_of(st.text(max_size=600), st.integers(), st.none(), st.booleans(),
                 st.lists(st.text(max_size=5), max_size=3)))  # fmt: skip
def test_any_locale_in_hello_is_kept_or_read_as_the_sites(lang: object) -> None:
    message = p.message_from_object(hello(lang))
    assert isinstance(message, p.Hello)
    plain = isinstance(lang, str) and re.fullmatch(r"[a-z]{2}(-[A-Za-z]{2})?", lang) is not None
    assert message.lang == (lang if plain else "")


@given(st.from_regex(r"\A[a-z]{2}(-[A-Za-z]{2})?\Z"))
def test_plain_locales_are_kept(lang: str) -> None:
    message = p.parse_client_message(json.dumps(hello(lang)))
    assert isinstance(message, p.Hello) and message.lang == lang


@pytest.mark.parametrize("lang", MALFORMED, ids=repr)
def test_malformed_locales_are_read_as_the_sites(lang: object) -> None:
    message = p.parse_client_message(json.dumps(hello(lang)))
    assert isinstance(message, p.Hello) and message.lang == ""


# --- real clients -------------------------------------------------------------------------------


def translated_site(server: ServerProcess, **trigger: Any) -> str:
    site = add_site(server.redis_url)
    campaign = message_campaign("sale", variants=[{"key": "a", "offer": TRANSLATED}])
    if trigger:
        campaign["trigger"] = trigger
    save_campaigns(server.redis_url, site, [campaign])
    return site


def exit_offer(server: ServerProcess, site: str, lang: object) -> tuple[dict[str, Any], Any]:
    """The armed offer and the shown one for a new visitor whose hello says ``lang``."""
    with Client(server.ws_url) as c:
        extra = {} if lang is None else {"lang": lang}
        c.hello(site, new_visitor(), **extra)
        armed = c.recv_until("arm")["offer"]
        return armed, c.signal_answer(EXIT)


@pytest.mark.parametrize(
    ("lang", "headline", "cta"),
    [("de", "Warte! 10 % Rabatt", "Holen"), ("de-AT", "Geh bitte! 10 % Rabatt", "Holen"),
     ("fr", "Wait! 10% off", "Get it"), ("en", "Wait! 10% off", "Get it")],
)  # fmt: skip
def test_each_visitor_gets_the_words_of_their_locale(
    server: ServerProcess, lang: str, headline: str, cta: str
) -> None:
    site = translated_site(server)
    armed, shown = exit_offer(server, site, lang)
    assert (armed["headline"], armed["cta"]["label"]) == (headline, cta)
    assert shown is not None and (shown["headline"], shown["cta"]["label"]) == (headline, cta)


@pytest.fixture(scope="module")
def german_base_site(server: ServerProcess) -> str:
    """A German site whose campaign has an English translation."""
    site = add_site(server.redis_url, locale="de")
    german_base = {**TRANSLATED, "headline": "Warte! 10 % Rabatt", "translations": {
        "en": {"headline": "Wait! 10% off"}}}  # fmt: skip
    save_campaigns(server.redis_url, site, [
        message_campaign("sale", variants=[{"key": "a", "offer": german_base}])
    ])  # fmt: skip
    return site


def test_malformed_locales_get_the_sites_words_and_no_error(
    server: ServerProcess, german_base_site: str
) -> None:
    site = german_base_site
    assert exit_offer(server, site, "en")[1]["headline"] == "Wait! 10% off"
    for lang in HOSTILE:
        with Client(server.ws_url) as c:
            c.send({"type": "hello", "v": 1, "site": site, "visitor": new_visitor(),
                    "lang": lang})  # fmt: skip
            seen = []
            while (message := c.recv()).get("type") != "arm":
                seen.append(message)
            assert [m["type"] for m in seen if m["type"] == "error"] == [], (lang, seen)
            assert message["offer"]["headline"] == "Warte! 10 % Rabatt", lang
            offer = c.signal_answer(EXIT)
            assert offer is not None and offer["headline"] == "Warte! 10 % Rabatt"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lang=st.one_of(st.text(max_size=40), st.from_regex(r"\A[a-z]{2}(-[A-Za-z]{2})?\Z"),
                      st.sampled_from(HOSTILE), st.integers(), st.none()))  # fmt: skip
def test_any_locale_over_a_real_socket_gets_an_offer_and_no_error(
    server: ServerProcess, german_base_site: str, lang: object
) -> None:
    """Whatever a hello says its locale is, the visitor is welcomed and armed: in English for
    ``en`` and its regions, else in the site's German."""
    english = isinstance(lang, str) and re.fullmatch(r"en(-[A-Za-z]{2})?", lang) is not None
    with Client(server.ws_url) as c:
        c.send({"type": "hello", "v": 1, "site": german_base_site, "visitor": new_visitor(),
                "lang": lang})  # fmt: skip
        seen = []
        while (message := c.recv()).get("type") != "arm":
            seen.append(message)
        assert "error" not in [m["type"] for m in seen], seen
        assert "welcome" in [m["type"] for m in seen]
        expected = "Wait! 10% off" if english else "Warte! 10 % Rabatt"
        assert message["offer"]["headline"] == expected


def test_free_shipping_amount_is_filled_into_the_translated_text(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign(
        "ship", trigger={"exit_intent": [], "hesitation": {"cart": 20}, "min_cart_items": 1},
        variants=[{"key": "a", "offer": {
            "kind": "free_shipping_progress", "headline": "Almost there",
            "body": "Add {remaining} EUR for free shipping.", "free_shipping_threshold": 60,
            "translations": {"de": {"headline": "Fast: noch {remaining} EUR",
                                    "body": "Noch {remaining} EUR bis zum Gratisversand."}}}}],
    )])  # fmt: skip
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor(), lang="de-DE")
        c.event("cart_add", item={"id": "A", "price": 42.5})
        c.answer(c.send({"type": "signal", "name": "hesitation", "seconds": 25,
                         "page_type": "cart"}))  # fmt: skip
        offer = c.recv_until("offer")["offer"]
    assert offer["headline"] == "Fast: noch 17.50 EUR"
    assert offer["body"] == "Noch 17.50 EUR bis zum Gratisversand."


def test_a_live_offer_reaches_each_visitor_in_their_language(server: ServerProcess) -> None:
    site = translated_site(server, exit_intent=[], live=True)
    langs = ["de", "en", "de-AT", "fr", "de", "../"]
    clients = [Client(server.ws_url) for _ in langs]
    try:
        for c, lang in zip(clients, langs, strict=True):
            c.hello(site, new_visitor(), lang=lang)
        started = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", "live", "start", "sale", "--site", site,
             "--minutes", "5"], env={**os.environ, "REDIS_URL": server.redis_url},
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        headlines = [c.recv_until("offer", timeout=15)["offer"]["headline"] for c in clients]
    finally:
        for c in clients:
            c.close()
    assert headlines == [
        "Warte! 10 % Rabatt", "Wait! 10% off", "Geh bitte! 10 % Rabatt", "Wait! 10% off",
        "Warte! 10 % Rabatt", "Wait! 10% off",
    ]  # fmt: skip
