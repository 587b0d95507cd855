"""The demo shop: server-rendered pages, placeholder product images and static assets.

Pages carry the widget tag like any shop would and run under ``script-src 'self'``: all behaviour
lives in ``static/shop.js``, which reads product data from JSON blocks and pushes GA4 ecommerce
events into ``window.dataLayer``.
"""

from __future__ import annotations

import colorsys
import html
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .catalog import DemoProduct, categories, purchase_option

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

FEATURED_COUNT = 8
ON_SALE_COUNT = 4
RELATED_COUNT = 4
ORDER_NUMBER = re.compile(r"[A-Z0-9-]{1,40}")
SVG_SIZE = 600
SVG_LABEL_MAX_CHARS = 36
XML_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
IMAGE_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}

GaItem = dict[str, str | float | int]
# The languages a visitor can switch the shop to (?lang=de): the page's <html lang>, which the
# widget sends, so the offers follow; the shop's own texts stay English.
LANGUAGES = {"en": "English", "de": "Deutsch"}
LANG_COOKIE = "demo_lang"


def demo_routes(site_key: str, catalog: list[DemoProduct]) -> list[BaseRoute]:
    """Routes of the demo shop under ``/demo``, tagged with the widget for ``site_key``."""
    shop = _DemoShop(site_key, catalog)
    return [
        Route("/demo", _redirect_to_home),
        Mount("/demo", routes=shop.routes()),
    ]


async def _redirect_to_home(request: Request) -> Response:
    return RedirectResponse("/demo/", status_code=308)


def ga_item(product: DemoProduct, quantity: int = 1) -> GaItem:
    """The product as a GA4 ecommerce item."""
    return {
        "item_id": product.id,
        "item_name": product.title,
        "item_brand": product.brand,
        "item_category": product.category_name,
        "price": product.effective_price,
        "quantity": quantity,
    }


def format_money(amount: float) -> str:
    return f"€{amount:,.2f}"


def _template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = format_money
    return environment


class _DemoShop:
    """Request handlers over one immutable catalog."""

    def __init__(self, site_key: str, catalog: Sequence[DemoProduct]) -> None:
        self._site_key = site_key
        self._catalog = list(catalog)
        self._products = {product.id: product for product in self._catalog}
        self._categories = categories(self._catalog)
        self._category_names = dict(self._categories)
        self._by_category: defaultdict[str, list[DemoProduct]] = defaultdict(list)
        self._by_group: defaultdict[str, list[DemoProduct]] = defaultdict(list)
        for product in self._catalog:
            self._by_category[product.category_slug].append(product)
            self._by_group[product.item_group_id].append(product)
        self._templates = _template_environment()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.home),
            Route("/c/{slug}", self.category),
            Route("/p/{product_id}", self.product),
            Route("/cart", self.cart),
            Route("/checkout", self.checkout),
            Route("/thank-you", self.thank_you, methods=["GET", "POST"]),
            Route("/privacy", self.privacy),
            Route("/img/{product_id}.svg", self.image),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR)),
            Route("/{unknown:path}", self.not_found),
        ]

    def _page(
        self,
        request: Request,
        template: str,
        page_type: str,
        *,
        status_code: int = 200,
        current_category: str | None = None,
        **context: object,
    ) -> HTMLResponse:
        asked = request.query_params.get("lang", "")
        lang = asked if asked in LANGUAGES else request.cookies.get(LANG_COOKIE, "")
        lang = lang if lang in LANGUAGES else "en"
        body = self._templates.get_template(template).render(
            site_key=self._site_key,
            page_type=page_type,
            categories=self._categories,
            current_category=current_category,
            lang=lang,
            languages=LANGUAGES,
            **context,
        )
        response = HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)
        if asked in LANGUAGES:  # the language chosen stays for the following pages
            response.set_cookie(LANG_COOKIE, asked, path="/demo", samesite="lax")
        return response

    async def home(self, request: Request) -> Response:
        featured = [
            next((p for p in products if p.purchasable), products[0])
            for products in self._by_category.values()
        ][:FEATURED_COUNT]
        on_sale = [p for p in self._catalog if p.sale_price is not None and p.purchasable]
        tiles = [
            (slug, name, len(self._by_category[slug]), self._by_category[slug][0])
            for slug, name in self._categories
        ]
        return self._page(
            request,
            "home.html",
            "home",
            title="Demo Shop",
            featured=featured,
            on_sale=on_sale[:ON_SALE_COUNT],
            tiles=tiles,
        )

    async def category(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        name = self._category_names.get(slug)
        if name is None:
            return self._not_found_page(request)
        products = self._by_category[slug]
        list_data = {
            "item_list_id": slug,
            "item_list_name": name,
            "items": [ga_item(product) for product in products],
        }
        return self._page(
            request,
            "category.html",
            "category",
            title=name,
            current_category=slug,
            category_name=name,
            products=products,
            list_data=list_data,
        )

    async def product(self, request: Request) -> Response:
        product = self._products.get(request.path_params["product_id"])
        if product is None:
            return self._not_found_page(request)
        related = [
            other
            for other in self._by_category[product.category_slug]
            if other.item_group_id != product.item_group_id
        ][:RELATED_COUNT]
        product_data = {
            **ga_item(product),
            "currency": product.currency,
            "available": product.purchasable,
            "link": product.link,
            "image_link": product.image_link,
        }
        return self._page(
            request,
            "product.html",
            "product",
            title=product.title,
            current_category=product.category_slug,
            product=product,
            variants=self._by_group[product.item_group_id],
            option=purchase_option(product.category_slug),
            related=related,
            product_data=product_data,
        )

    async def cart(self, request: Request) -> Response:
        return self._page(request, "cart.html", "cart", title="Your cart")

    async def checkout(self, request: Request) -> Response:
        if request.query_params.get("step") == "payment":
            return self._page(request, "payment.html", "payment", title="Payment")
        return self._page(request, "checkout.html", "checkout", title="Checkout")

    async def thank_you(self, request: Request) -> Response:
        order = request.query_params.get("order", "")
        order_number = order if ORDER_NUMBER.fullmatch(order) else None
        return self._page(
            request, "thank_you.html", "thank_you", title="Thank you", order_number=order_number
        )

    async def image(self, request: Request) -> Response:
        product = self._products.get(request.path_params["product_id"])
        if product is None:
            return self._not_found_page(request)
        return Response(placeholder_svg(product), media_type="image/svg+xml", headers=IMAGE_HEADERS)

    async def privacy(self, request: Request) -> Response:
        return self._page(request, "privacy.html", "other", title="Privacy")

    async def not_found(self, request: Request) -> Response:
        return self._not_found_page(request)

    def _not_found_page(self, request: Request) -> HTMLResponse:
        return self._page(
            request, "not_found.html", "not_found", status_code=404, title="Page not found"
        )


def placeholder_svg(product: DemoProduct) -> str:
    """A square product picture: a colour derived from the id, the initials and the brand."""
    hue = (zlib.crc32(product.id.encode()) % 360) / 360
    background = _hex_colour(hue, lightness=0.42, saturation=0.45)
    accent = _hex_colour(hue, lightness=0.62, saturation=0.5)
    initials = _xml_text(_initials(product.title))
    label = _xml_text(_shorten(product.brand, SVG_LABEL_MAX_CHARS))
    title = _xml_text(product.title)
    middle = SVG_SIZE // 2
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_SIZE}" height="{SVG_SIZE}" '
        f'viewBox="0 0 {SVG_SIZE} {SVG_SIZE}" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        f'<rect width="{SVG_SIZE}" height="{SVG_SIZE}" fill="{background}"/>'
        f'<circle cx="{middle}" cy="{middle - 20}" r="170" fill="{accent}" opacity="0.55"/>'
        f'<text x="{middle}" y="{middle + 30}" text-anchor="middle" '
        f'font-family="system-ui, sans-serif" font-size="150" font-weight="700" '
        f'fill="#ffffff">{initials}</text>'
        f'<text x="{middle}" y="{SVG_SIZE - 60}" text-anchor="middle" '
        f'font-family="system-ui, sans-serif" font-size="30" fill="#ffffff" '
        f'opacity="0.9">{label}</text>'
        "</svg>"
    )


def _xml_text(text: str) -> str:
    """Escape for XML text and attributes, dropping characters XML 1.0 cannot carry at all."""
    return html.escape(XML_FORBIDDEN_CHARACTERS.sub("", text), quote=True)


def _initials(title: str) -> str:
    words = [word for word in title.split() if word[0].isalnum()]
    return "".join(word[0] for word in words[:2]).upper() or "?"


def _shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def _hex_colour(hue: float, *, lightness: float, saturation: float) -> str:
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
