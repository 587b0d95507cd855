"""Campaign texts in several languages in the admin: the site's languages, the editor's inputs
for each (saved, shown again, errors next to them) and the preview in a chosen language, over
HTTP and in a real Chromium."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from playwright.sync_api import Page

from widget_server.store.keys import Keys

from ..support import ServerProcess, message_campaign, save_campaigns
from .test_admin import (
    AdminClient,
    editor_fields,
    make_user,
    new_site_key,
    stored_campaign,
)
from .test_browser import (
    Watched,
    browser,  # noqa: F401 (fixture)
    field,
    new_page,  # noqa: F401 (fixture)
    sign_in,
)
from .test_preview import headline_in, off_loop, offer_of, preview_changes

KEYS = Keys()
SITE = {"origins": "https://shop.test", "currency": "EUR", "locale": "en", "timezone": "UTC"}
TR = "variants.0.offer.translations"


@pytest.fixture(scope="module")
def owner(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(off_loop(make_user, redis_url, "owner")).status_code == 303
    yield client
    client.close()


def german_site(owner: AdminClient) -> str:
    return new_site_key(owner, text_locales="de, FR")


def new_campaign_fields(owner: AdminClient, site: str) -> dict[str, Any]:
    fields = editor_fields(owner, site)
    fields.update({"id": ["sale"], "name": ["Sale"], "status": ["active"],
                   "variants.0.offer.kind": ["message"], "variants.0.discount.type": [""],
                   "variants.0.offer.headline": ["Wait! 10% off"],
                   "variants.0.offer.body": ["Only today."],
                   "variants.0.offer.cta_label": ["Get it"]})  # fmt: skip
    return fields


def test_the_site_form_sets_the_languages_the_shop_sells_in(
    owner: AdminClient, r: redis.Redis
) -> None:
    key = german_site(owner)
    assert json.loads(r.get(KEYS.site(key)) or "{}")["text_locales"] == ["de", "fr"]
    assert 'id="text-locales">de, fr<' in owner.get(f"/admin/sites/{key}").text
    form = owner.get(f"/admin/sites/{key}/edit").text
    assert 'name="text_locales" type="text" value="de, fr"' in form
    bad = owner.post(f"/admin/sites/{key}/edit", {**SITE, "name": key, "text_locales": "de-AT, x"})
    assert bad.status_code == 422 and 'id="err-text_locales"' in bad.text
    assert 'value="de-AT, x"' in bad.text
    # A post without the field (an older form) keeps the languages; an empty one clears them.
    assert owner.post(f"/admin/sites/{key}/edit", {**SITE, "name": key}).status_code == 303
    assert json.loads(r.get(KEYS.site(key)) or "{}")["text_locales"] == ["de", "fr"]
    cleared = owner.post(f"/admin/sites/{key}/edit", {**SITE, "name": key, "text_locales": ""})
    assert cleared.status_code == 303
    assert json.loads(r.get(KEYS.site(key)) or "{}")["text_locales"] == []


def test_the_editor_saves_and_shows_each_languages_words(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = german_site(owner)
    fields = new_campaign_fields(owner, site)
    for code in ("de", "fr"):  # the site's other languages, folded away
        assert f"{TR}.{code}.headline" in fields and f"{TR}.{code}.cta_label" in fields
    assert f"{TR}.en.headline" not in fields  # the site's own: the base fields
    fields.update({f"{TR}.de.headline": ["Warte! 10 % Rabatt"], f"{TR}.de.body": ["Nur heute."],
                   f"{TR}.de.cta_label": ["Holen"]})  # fmt: skip
    assert owner.post(f"/admin/sites/{site}/campaigns/new", fields).status_code == 303
    offer = stored_campaign(r, site, "sale")["variants"][0]["offer"]
    assert offer["headline"] == "Wait! 10% off"
    assert offer["translations"] == {
        "de": {"headline": "Warte! 10 % Rabatt", "body": "Nur heute.", "cta_label": "Holen"}
    }  # French left empty: none stored
    again = editor_fields(owner, site, "sale")
    assert again[f"{TR}.de.headline"] == ["Warte! 10 % Rabatt"]
    assert again[f"{TR}.de.body"] == ["Nur heute."]
    assert again[f"{TR}.fr.headline"] == [""]
    # Saved again unchanged: the same content.
    assert owner.post(f"/admin/sites/{site}/campaigns/sale/edit", again).status_code == 303
    assert stored_campaign(r, site, "sale")["variants"][0]["offer"] == offer


def test_a_too_long_translation_is_shown_next_to_its_field(owner: AdminClient) -> None:
    site = german_site(owner)
    fields = new_campaign_fields(owner, site)
    fields.update({f"{TR}.de.headline": ["x" * 121], f"{TR}.fr.cta_label": ["y" * 41]})
    page = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert page.status_code == 422
    assert f'id="err-{TR}.de.headline"' in page.text
    assert f'id="err-{TR}.fr.cta_label"' in page.text
    assert "Variant 1: Headline (de)" in page.text and "Variant 1: Button label (fr)" in page.text
    assert f'<details class="sub translations" id="f-{TR}" open>' in page.text
    assert "x" * 121 in page.text  # what was typed stays


def test_the_preview_shows_the_chosen_language(owner: AdminClient, r: redis.Redis) -> None:
    site = german_site(owner)
    fields = new_campaign_fields(owner, site)
    fields[f"{TR}.de.headline"] = ["Warte! 10 % Rabatt"]
    assert owner.post(f"/admin/sites/{site}/campaigns/new", fields).status_code == 303
    base = f"/admin/sites/{site}/campaigns/sale/preview"
    form = editor_fields(owner, site, "sale")
    assert form["preview_locale"] == ["en"]  # the site's first
    cases = {"de": "Warte! 10 % Rabatt", "en": "Wait! 10% off", "fr": "Wait! 10% off",
             "../x": "Wait! 10% off", "de\n": "Wait! 10% off"}  # fmt: skip
    for locale, headline in cases.items():
        page = owner.post(base, {**form, "preview_locale": locale})
        assert page.status_code == 200 and offer_of(page.text)["headline"] == headline, locale
        saved = owner.get(base, params={"locale": locale})
        assert offer_of(saved.text)["headline"] == headline, locale
    overview = owner.get(f"/admin/sites/{site}/campaigns/sale", params={"locale": "de"}).text
    assert 'lang="de" aria-current="true">de</a>' in overview
    assert "/preview?variant=a&amp;width=desktop&amp;locale=de" in overview
    german = owner.post(base, {**form, "preview_locale": "de"}).text
    assert '<html lang="de">' in german
    assert offer_of(german)["body"] == "Only today."  # not translated: the base text


@pytest.mark.browser
def test_the_editor_previews_each_language(
    new_page: Callable[..., Watched],  # noqa: F811
    server: ServerProcess,
    redis_url: str,
    owner: AdminClient,
) -> None:
    site = german_site(owner)
    assert (
        owner.post(
            f"/admin/sites/{site}/campaigns/new", new_campaign_fields(owner, site)
        ).status_code
        == 303
    )
    page: Page = new_page().page
    sign_in(page, server, off_loop(make_user, redis_url, "editor"))
    page.goto(f"{server.url}/admin/sites/{site}/campaigns/sale/edit")
    page.locator(f'[id="f-{TR}"] > summary').click()  # "Other languages" opens
    field(page, f"{TR}.de.headline").fill("Warte! 10 % Rabatt")
    page.get_by_label("Language").select_option("de")
    assert headline_in(preview_changes(page), "Warte! 10 % Rabatt")
    page.get_by_label("Language").select_option("en")
    assert headline_in(preview_changes(page), "Wait! 10% off")


def test_a_regional_translation_set_in_json_is_shown_and_kept(
    owner: AdminClient, r: redis.Redis, redis_url: str
) -> None:
    site = german_site(owner)
    campaign = message_campaign("region", variants=[{"key": "a", "offer": {
        "kind": "message", "headline": "Wait! 10% off",
        "translations": {"de-AT": {"headline": "Geh bitte! 10 % Rabatt"}}}}])  # fmt: skip
    off_loop(save_campaigns, redis_url, site, [campaign])
    before = stored_campaign(r, site, "region")["variants"][0]["offer"]["translations"]
    fields = editor_fields(owner, site, "region")
    assert fields[f"{TR}.de-AT.headline"] == ["Geh bitte! 10 % Rabatt"]
    assert f"{TR}.de.headline" in fields and f"{TR}.fr.headline" in fields
    fields[f"{TR}.de-AT.cta_label"] = ["y" * 41]
    refused = owner.post(f"/admin/sites/{site}/campaigns/region/edit", fields)
    assert refused.status_code == 422 and f'id="err-{TR}.de-AT.cta_label"' in refused.text
    fields[f"{TR}.de-AT.cta_label"] = [""]
    assert owner.post(f"/admin/sites/{site}/campaigns/region/edit", fields).status_code == 303
    after = stored_campaign(r, site, "region")["variants"][0]["offer"]["translations"]
    assert after == before and after["de-AT"]["headline"] == "Geh bitte! 10 % Rabatt"
