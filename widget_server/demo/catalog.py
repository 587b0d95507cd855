"""A deterministic, generated product catalog for the demo shop, and its Merchant Center feed.

Everything is built from word lists with a seeded ``random.Random``: the same seed always yields the
same products, ids and prices, so tests, screenshots and benchmarks can rely on them.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Availability = Literal["in stock", "out of stock", "preorder"]

CURRENCY = "EUR"
FIRST_PRODUCT_NUMBER = 1001
SALE_SHARE = 0.10
OUT_OF_STOCK_SHARE = 0.05
PREORDER_SHARE = 0.02
MAX_VARIANTS = 3
VARIANT_SEPARATOR = " \u2013 "  # en dash
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

FEED_COLUMNS = (
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "price",
    "sale_price",
    "availability",
    "brand",
    "product_type",
    "google_product_category",
    "item_group_id",
)


@dataclass(frozen=True, slots=True)
class DemoProduct:
    """One sellable item, shaped like a Google Merchant Center feed row."""

    id: str
    title: str
    description: str
    link: str
    image_link: str
    price: float
    sale_price: float | None
    currency: str
    availability: Availability
    brand: str
    product_type: str
    google_product_category: str
    item_group_id: str
    category_slug: str

    @property
    def effective_price(self) -> float:
        """What the shopper pays: the sale price when there is one."""
        return self.sale_price if self.sale_price is not None else self.price

    @property
    def category_name(self) -> str:
        """The last segment of the category path, e.g. "Running Shoes"."""
        return self.product_type.rpartition(" > ")[2]

    @property
    def variant_label(self) -> str:
        """The variant part of the title (a colour or a pack size), or the whole title."""
        head, separator, tail = self.title.rpartition(VARIANT_SEPARATOR)
        return tail if separator and head else self.title

    @property
    def purchasable(self) -> bool:
        return self.availability != "out of stock"


@dataclass(frozen=True, slots=True)
class PurchaseOption:
    """A choice the shopper makes on the product page that does not change the product id."""

    label: str
    choices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Category:
    slug: str
    product_type: str
    google_product_category: str
    brands: tuple[str, ...]
    models: tuple[str, ...]
    nouns: tuple[str, ...]
    variants: tuple[str, ...]
    price_band: tuple[float, float]
    features: tuple[str, ...]
    variant_price_factors: tuple[float, ...] = ()
    option: PurchaseOption | None = None

    @property
    def has_sized_variants(self) -> bool:
        """Pack sizes come in a fixed order and scale the price; colours are picked freely."""
        return bool(self.variant_price_factors)


_COLOURS = (
    "Black",
    "Graphite",
    "Navy",
    "Ocean Blue",
    "Forest Green",
    "Olive",
    "Sand",
    "Stone Grey",
    "Burgundy",
    "Rust",
    "Off-White",
    "Coral",
)

_CATEGORIES = (
    _Category(
        slug="running-shoes",
        product_type="Apparel > Shoes > Running Shoes",
        google_product_category="Apparel & Accessories > Shoes",
        brands=("Stridewell", "Korro", "Fleetfoot", "Northpace"),
        models=("Tempo", "Glide", "Arc", "Pulse", "Rally", "Vela", "Crest", "Drift"),
        nouns=("Road Runner", "Trail Runner", "Racer", "Daily Trainer", "Tempo Trainer"),
        variants=_COLOURS,
        price_band=(69.0, 179.0),
        option=PurchaseOption("Size (EU)", tuple(str(size) for size in range(38, 47))),
        features=(
            "A responsive foam midsole keeps every stride springy",
            "The breathable engineered mesh upper stays cool on long runs",
            "A grippy rubber outsole holds on wet tarmac and loose gravel",
            "A rocker geometry rolls you smoothly from heel to toe",
        ),
    ),
    _Category(
        slug="jackets",
        product_type="Apparel > Outerwear > Jackets",
        google_product_category="Apparel & Accessories > Clothing > Outerwear > Coats & Jackets",
        brands=("Fjellmark", "Harbour & Pine", "Coldwater Co.", "Aldersky"),
        models=("Ridge", "Harbour", "Fjord", "Alpine", "Metro", "Tundra", "Coast"),
        nouns=("Rain Jacket", "Down Jacket", "Softshell Jacket", "Insulated Parka", "Windbreaker"),
        variants=_COLOURS,
        price_band=(59.0, 289.0),
        option=PurchaseOption("Size", ("XS", "S", "M", "L", "XL", "XXL")),
        features=(
            "A waterproof, breathable shell with fully taped seams",
            "Recycled insulation keeps you warm even when it gets damp",
            "An adjustable hood and two-way zip make it easy to layer",
            "It packs into its own chest pocket for travel",
        ),
    ),
    _Category(
        slug="backpacks",
        product_type="Bags > Backpacks",
        google_product_category="Luggage & Bags > Backpacks",
        brands=("Packwright", "Trailnest", "Urbanrook"),
        models=("Commuter", "Voyager", "Summit", "Cityline", "Rover", "Atlas"),
        nouns=("Daypack 20 L", "Rolltop Pack 28 L", "Hiking Pack 35 L", "Laptop Backpack 24 L"),
        variants=_COLOURS,
        price_band=(39.0, 169.0),
        features=(
            "A padded sleeve fits laptops up to 16 inches",
            "Water-resistant recycled fabric shrugs off sudden showers",
            "A ventilated back panel and load lifters carry heavy days comfortably",
            "Hidden pockets keep passport and keys close at hand",
        ),
    ),
    _Category(
        slug="coffee",
        product_type="Food & Drink > Coffee",
        google_product_category="Food, Beverages & Tobacco > Beverages > Coffee",
        brands=("Ember & Oak Roasters", "Bluebird Coffee", "Casa Molino"),
        models=(
            "Ethiopia Yirgacheffe",
            "Colombia Huila",
            "Brazil Cerrado",
            "Guatemala Antigua",
            "Kenya Nyeri",
            "House Blend",
            "Decaf Swiss Water",
        ),
        nouns=("Espresso Roast", "Filter Roast", "Whole Beans"),
        variants=("250 g", "500 g", "1 kg"),
        variant_price_factors=(1.0, 1.85, 3.4),
        price_band=(8.0, 16.0),
        option=PurchaseOption("Grind", ("Whole beans", "Espresso", "Filter", "French press")),
        features=(
            "Roasted in small batches every week and shipped within days",
            "Notes of dark chocolate, red berries and brown sugar",
            "A round, sweet cup that works for espresso and milk drinks",
            "Sourced directly from farms we have worked with for years",
        ),
    ),
    _Category(
        slug="headphones",
        product_type="Electronics > Audio > Headphones",
        google_product_category="Electronics > Audio > Audio Components > Headphones & Headsets",
        brands=("Sonara", "Audiolux", "Quietwave", "Tembo Audio"),
        models=("Aria", "Echo", "Nova", "Studio", "Halo", "Flux", "Mono"),
        nouns=(
            "Wireless Over-Ear Headphones",
            "Noise-Cancelling Headphones",
            "True Wireless Earbuds",
            "Sport Earbuds",
            "Studio Headphones",
        ),
        variants=("Black", "Off-White", "Navy", "Sand", "Graphite", "Coral"),
        price_band=(29.0, 349.0),
        features=(
            "Active noise cancelling quiets trains, planes and open offices",
            "Up to 40 hours of battery life with fast USB-C charging",
            "Multipoint Bluetooth switches between laptop and phone",
            "Tuned by studio engineers for a balanced, detailed sound",
        ),
    ),
    _Category(
        slug="yoga",
        product_type="Sports & Fitness > Yoga",
        google_product_category="Sporting Goods > Exercise & Fitness > Yoga & Pilates",
        brands=("Lotusline", "Stillpoint", "Asana Lab"),
        models=("Flow", "Balance", "Grounded", "Breathe", "Studio", "Sola"),
        nouns=("Yoga Mat 4 mm", "Travel Yoga Mat", "Cork Yoga Block", "Yoga Strap", "Bolster"),
        variants=("Sage", "Lavender", "Black", "Sand", "Ocean Blue", "Terracotta"),
        price_band=(12.0, 99.0),
        features=(
            "Natural rubber with a non-slip surface, even in hot classes",
            "Light enough to carry to the studio every day",
            "Made from sustainably harvested materials",
            "Easy to wipe clean after every practice",
        ),
    ),
    _Category(
        slug="kitchen",
        product_type="Home & Garden > Kitchen",
        google_product_category="Home & Garden > Kitchen & Dining > Cookware & Bakeware",
        brands=("Ferro & Fig", "Hearthmade", "Kochwerk"),
        models=("Classic", "Pro", "Nordic", "Heritage", "Everyday", "Atelier"),
        nouns=(
            "Cast Iron Skillet 26 cm",
            "Chef's Knife 20 cm",
            "Dutch Oven 5 L",
            "Saucepan 18 cm",
            "Pour-Over Kettle",
            "Cutting Board",
        ),
        variants=("Black", "Stone Grey", "Off-White", "Forest Green", "Burgundy"),
        price_band=(19.0, 229.0),
        features=(
            "Works on gas, electric and induction hobs",
            "Forged in one piece and balanced for everyday cooking",
            "Oven safe up to 260 °C",
            "Dishwasher safe and built for decades of use",
        ),
    ),
    _Category(
        slug="watches",
        product_type="Apparel > Accessories > Watches",
        google_product_category="Apparel & Accessories > Jewelry > Watches",
        brands=("Halden", "Marlowe & Reed", "Tidewell"),
        models=("Meridian", "Atlas", "Harbour", "Orbit", "Field", "Regatta"),
        nouns=(
            "Automatic Dive Watch",
            "Field Watch 38 mm",
            "Chronograph",
            "Minimalist Watch 40 mm",
            "Solar Watch",
        ),
        variants=("Black", "Navy", "Forest Green", "Off-White", "Sand"),
        price_band=(89.0, 599.0),
        features=(
            "Sapphire crystal and 100 m water resistance",
            "A quick-release strap swaps from leather to steel in seconds",
            "Luminous hands stay readable in the dark",
            "A reliable movement that is regulated by hand",
        ),
    ),
)

_ADJECTIVES = (
    "Lightweight",
    "Durable",
    "Versatile",
    "Everyday",
    "Thoughtfully made",
    "Best-selling",
)
_CLOSINGS = (
    "Free returns within 30 days.",
    "Ships within 2 business days.",
    "Backed by a 2-year warranty.",
    "Made to last through years of daily use.",
)


def generate_catalog(seed: int = 7, size: int = 240) -> list[DemoProduct]:
    """Return ``size`` products; the same seed always returns the same list."""
    if size < 0:
        raise ValueError("size must not be negative")
    rng = random.Random(seed)
    products: list[DemoProduct] = []
    used_names: set[tuple[str, str, str, str]] = set()
    group_number = 0
    while len(products) < size:
        category = _CATEGORIES[group_number % len(_CATEGORIES)]
        group_number += 1
        group = _generate_group(rng, category, f"G{group_number:04d}", len(products), used_names)
        products.extend(group[: size - len(products)])
    return products


def _generate_group(
    rng: random.Random,
    category: _Category,
    group_id: str,
    products_so_far: int,
    used_names: set[tuple[str, str, str, str]],
) -> list[DemoProduct]:
    brand, model, noun = _unique_name(rng, category, used_names)
    base_price = rng.uniform(*category.price_band)
    description = (
        f"{rng.choice(_ADJECTIVES)} {noun} by {brand}. "
        f"{rng.choice(category.features)}. {rng.choice(_CLOSINGS)}"
    )
    variant_count = rng.randint(1, MAX_VARIANTS)
    if category.has_sized_variants:
        variants = list(zip(category.variants, category.variant_price_factors, strict=True))
        picked = variants[:variant_count]
    else:
        picked = [(colour, 1.0) for colour in rng.sample(category.variants, variant_count)]
    group: list[DemoProduct] = []
    for offset, (variant, price_factor) in enumerate(picked):
        product_id = f"P{FIRST_PRODUCT_NUMBER + products_so_far + offset}"
        price = _charm_price(base_price * price_factor)
        group.append(
            DemoProduct(
                id=product_id,
                title=f"{brand} {model} {noun}{VARIANT_SEPARATOR}{variant}",
                description=description,
                link=f"/demo/p/{product_id}",
                image_link=f"/demo/img/{product_id}.svg",
                price=price,
                sale_price=_maybe_sale_price(rng, price),
                currency=CURRENCY,
                availability=_pick_availability(rng),
                brand=brand,
                product_type=category.product_type,
                google_product_category=category.google_product_category,
                item_group_id=group_id,
                category_slug=category.slug,
            )
        )
    return group


def _unique_name(
    rng: random.Random, category: _Category, used_names: set[tuple[str, str, str, str]]
) -> tuple[str, str, str]:
    """Pick brand, model and noun, avoiding names already used when the word lists allow it."""
    for _ in range(100):
        brand = rng.choice(category.brands)
        model = rng.choice(category.models)
        noun = rng.choice(category.nouns)
        key = (category.slug, brand, model, noun)
        if key not in used_names:
            used_names.add(key)
            return brand, model, noun
    return brand, model, noun


def _charm_price(amount: float) -> float:
    """Round to a shop-style price ending in .90, never below 0.90."""
    return max(math.floor(amount), 0) + 0.9


def _maybe_sale_price(rng: random.Random, price: float) -> float | None:
    if rng.random() >= SALE_SHARE:
        return None
    discounted = _charm_price(price * rng.uniform(0.65, 0.9))
    return discounted if discounted < price else None


def _pick_availability(rng: random.Random) -> Availability:
    roll = rng.random()
    if roll < OUT_OF_STOCK_SHARE:
        return "out of stock"
    if roll < OUT_OF_STOCK_SHARE + PREORDER_SHARE:
        return "preorder"
    return "in stock"


def purchase_option(category_slug: str) -> PurchaseOption | None:
    """The size or grind picker for products of this category, if it has one."""
    for category in _CATEGORIES:
        if category.slug == category_slug:
            return category.option
    return None


def categories(catalog: Iterable[DemoProduct]) -> list[tuple[str, str]]:
    """Return ``(slug, display name)`` for every category, in order of first appearance."""
    seen: dict[str, str] = {}
    for product in catalog:
        seen.setdefault(product.category_slug, product.category_name)
    return list(seen.items())


def format_feed_price(amount: float, currency: str) -> str:
    """Merchant Center price notation, e.g. ``59.90 EUR``."""
    return f"{amount:.2f} {currency}"


def feed_row(product: DemoProduct, base_url: str) -> dict[str, str]:
    """One feed row with absolute links under ``base_url``."""
    root = base_url.rstrip("/")
    sale_price = product.sale_price
    return {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "link": root + product.link,
        "image_link": root + product.image_link,
        "price": format_feed_price(product.price, product.currency),
        "sale_price": "" if sale_price is None else format_feed_price(sale_price, product.currency),
        "availability": product.availability,
        "brand": product.brand,
        "product_type": product.product_type,
        "google_product_category": product.google_product_category,
        "item_group_id": product.item_group_id,
    }


def write_feed_tsv(
    catalog: Sequence[DemoProduct], path: Path | str, base_url: str = DEFAULT_BASE_URL
) -> None:
    """Write a tab-separated Google Merchant Center feed for ``catalog`` to ``path``."""
    with Path(path).open("w", encoding="utf-8", newline="") as feed:
        writer = csv.DictWriter(feed, fieldnames=FEED_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for product in catalog:
            writer.writerow(feed_row(product, base_url))
