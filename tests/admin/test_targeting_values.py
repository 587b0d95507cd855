"""The targeting value field suggests the values of the field chosen beside it: page types,
devices, countries with their names, traffic sources and mediums, and the cart's categories and
brands from the site's catalog."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect
from redis.asyncio import Redis

from widget_server.catalog.feeds import Product
from widget_server.catalog.store import CatalogStore

from ..support import ServerProcess, add_site, message_campaign, save_campaigns
from .test_admin import KEYS, AdminClient, form_fields, make_user
from .test_browser import signed_in_page


@pytest.fixture(scope="module")
def editor(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, "editor")).status_code == 303
    yield client
    client.close()


def catalog_site(redis_url: str) -> str:
    site = add_site(redis_url)

    async def fill() -> None:
        client = Redis.from_url(redis_url)
        try:
            products = [
                Product(id=f"p{n}", title=title, price=9.0, product_type=kind, brand=brand)
                for n, (title, kind, brand) in enumerate([
                    ("Mug", "kitchen", "Clayworks"), ("Bowl", "tableware", "Clayworks"),
                    ("Lamp", "lighting", "Lumen"),
                ])
            ]  # fmt: skip
            await CatalogStore(client, KEYS).upsert(site, products)
        finally:
            await client.aclose()

    asyncio.run(fill())
    return site


def list_of(page: str, name: str) -> str:
    """The suggestions an input of the page offers (its datalist's id)."""
    found = re.search(
        rf'<input id="f-{re.escape(name)}" name="{re.escape(name)}"[^>]*?list="([^"]+)"', page
    )
    assert found is not None, name
    return found[1]


def test_each_field_suggests_its_own_values(editor: AdminClient, redis_url: str) -> None:
    site = catalog_site(redis_url)
    targeted = {"any": [{"all": [
        {"field": "country", "op": "in", "value": ["DE", "AT"]},
        {"field": "cart_brand", "op": "is", "value": "Lumen"},
        {"field": "url", "op": "contains", "value": "/sale"},
    ]}]}  # fmt: skip
    save_campaigns(redis_url, site, [message_campaign("picky", targeting=targeted)])
    page = editor.get(f"/admin/sites/{site}/campaigns/picky/edit").text
    lists = [list_of(page, f"targeting.any.0.all.{n}.value") for n in range(3)]
    assert lists == ["values-country", "values-cart_brand", "known-values"]
    assert '<option value="DE" label="Germany">' in page
    assert '<datalist id="values-cart_category"><option value="kitchen"></option>' in page
    assert '<option value="Clayworks"></option><option value="Lumen"></option>' in page
    assert '<option value="newsletter"></option>' in page  # a traffic source


@pytest.mark.browser
def test_choosing_a_field_switches_the_suggestions(server: ServerProcess, redis_url: str) -> None:
    site = catalog_site(redis_url)
    targeted = {"any": [{"all": [{"field": "url", "op": "contains", "value": ""}]}]}
    save_campaigns(redis_url, site, [message_campaign("picky", targeting=targeted)])
    with signed_in_page(server, make_user(redis_url, "editor")) as (page, _):
        page.goto(f"{server.url}/admin/sites/{site}/campaigns/picky/edit")
        value = page.locator('input[name="targeting.any.0.all.0.value"]')
        expect(value).to_have_attribute("list", "known-values")
        page.locator('select[name="targeting.any.0.all.0.field"]').select_option("country")
        expect(value).to_have_attribute("list", "values-country")
        page.locator('select[name="targeting.any.0.all.0.field"]').select_option("cart_category")
        expect(value).to_have_attribute("list", "values-cart_category")


def test_the_sentence_of_unsaved_fields(editor: AdminClient, redis_url: str) -> None:
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("picky")])
    page = editor.get(f"/admin/sites/{site}/campaigns/picky/edit").text
    fields = {name: values for name, values in form_fields(page, "campaign-form").items()}
    assert 'id="audience-sentence">Shown to visitors' in page
    phones = {**fields, "targeting.devices": ["mobile"]}
    answer = editor.http.post(f"/admin/sites/{site}/campaigns/audience", data=phones)
    assert answer.status_code == 200 and "on phones" in answer.text
    broken = {**fields, "trigger.min_cart_value": ["lots"]}
    answer = editor.http.post(f"/admin/sites/{site}/campaigns/audience", data=broken)
    assert answer.status_code == 422 and answer.text == ""


@pytest.mark.browser
def test_the_sentence_follows_the_typing(server: ServerProcess, redis_url: str) -> None:
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("picky")])
    with signed_in_page(server, make_user(redis_url, "editor")) as (page, _):
        page.goto(f"{server.url}/admin/sites/{site}/campaigns/picky/edit")
        sentence = page.locator("#audience-sentence")
        expect(sentence).not_to_contain_text("on phones")
        page.get_by_role("checkbox", name="Desktop", exact=True).uncheck()
        page.get_by_role("checkbox", name="Tablet", exact=True).uncheck()
        expect(sentence).to_contain_text("on phones")
