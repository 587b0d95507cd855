"""Links from marketers and feeds stay on the shop or go where they say, as a browser reads them."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from widget_server.catalog.feeds import RowError, parse_fields
from widget_server.links import safe_link
from widget_server.offers.campaigns import CampaignInvalid, parse_campaign

SHOP = "https://shop.test/products/1"


def as_a_browser_reads(link: str) -> str:
    """The host a browser goes to for ``link`` on a page of the shop (it reads ``\\`` as ``/``
    in http(s) URLs)."""
    return urlsplit(urljoin(SHOP, link.replace("\\", "/"))).hostname or ""


@pytest.mark.parametrize(
    "link",
    ["/\\evil.example/path", "//evil.example/path", "/\\/evil.example", "\\\\evil.example",
     "javascript:alert(1)", "https://", "http:///path", "/path with space", "/a\tb", "ftp://x.test",
     "data:text/html,hi", ""],
)  # fmt: skip
def test_links_that_leave_or_break_are_refused(link: str) -> None:
    assert safe_link(link) is None


@pytest.mark.parametrize(
    "link", ["/", "/cart?x=1#top", "https://shop.test/a", "http://other.test:8080/x?y=%20"]
)
def test_paths_and_absolute_links_are_kept_as_written(link: str) -> None:
    assert safe_link(link) == link


@given(st.text(alphabet=st.sampled_from("/\\:.?#@%ahtps ex\t"), max_size=30))
def test_an_accepted_path_never_leaves_the_shop(link: str) -> None:
    accepted = safe_link(link)
    if accepted is not None and accepted.startswith("/"):
        assert as_a_browser_reads(accepted) == "shop.test"
    if accepted is not None and not accepted.startswith("/"):
        assert as_a_browser_reads(accepted) == urlsplit(accepted).hostname


def test_a_campaign_link_to_another_site_disguised_as_a_path_is_a_field_error() -> None:
    offer = {"kind": "message", "headline": "x", "cta_url": "/\\evil.example/path"}
    with pytest.raises(CampaignInvalid) as caught:
        parse_campaign({"id": "c", "name": "c", "variants": [{"key": "a", "offer": offer}]})
    assert [e.path for e in caught.value.errors] == ["variants.0.offer.cta_url"]


def test_a_feed_row_with_such_a_link_is_a_row_error() -> None:
    row = parse_fields(
        {"id": "P1", "title": "Mug", "price": "9.90 EUR", "link": "/\\evil.example/mug"}, line=2
    )
    assert isinstance(row, RowError) and row.field == "link"
