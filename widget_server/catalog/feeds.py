"""Google Merchant Center product feeds: TSV/CSV and XML (RSS 2.0, Atom) into :class:`Product`.

Parsing is pure and streaming: every parser is a generator that yields, per feed row, either a
:class:`Product` or a :class:`RowError` naming the line, the field and the reason, so one bad row
never stops the others. Problems with the feed as a whole (no usable header, not UTF-8, not a feed,
DTDs, a limit of :class:`FeedLimits` exceeded) raise one :class:`FeedError` with a readable message.
"""

from __future__ import annotations

import csv
import math
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Literal, TypeAlias, cast
from xml.sax import SAXParseException
from xml.sax.handler import ContentHandler, feature_namespaces
from xml.sax.xmlreader import AttributesNSImpl, IncrementalParser, Locator

import msgspec
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.expatreader import DefusedExpatParser  # type: ignore[import-untyped]

from ..errors import WidgetServerError
from ..links import safe_link

GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
REQUIRED_COLUMNS = ("id", "title", "price")

Availability: TypeAlias = Literal["in_stock", "out_of_stock", "preorder", "backorder"]


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """One catalog item, normalised from a feed row or learned from a product page view."""

    id: str
    title: str = ""
    link: str = ""
    image_link: str = ""
    price: float = 0.0
    sale_price: float | None = None
    currency: str = ""
    availability: Availability = "in_stock"
    brand: str = ""
    product_type: str = ""
    google_product_category: str = ""
    item_group_id: str = ""
    updated: float = 0.0
    # Units in stock, when the feed says (``quantity``, else ``sell_on_google_quantity``);
    # Merchant Center has no other stock count. Last, so a product without one hashes as before.
    quantity: int | None = None

    @property
    def effective_price(self) -> float:
        """What the shopper pays: the sale price when there is one."""
        return self.sale_price if self.sale_price is not None else self.price

    @property
    def available(self) -> bool:
        """Whether the product can be offered (everything but out of stock)."""
        return self.availability != "out_of_stock"


class RowError(msgspec.Struct, frozen=True):
    """A feed row that was skipped: its first line, the offending field and why."""

    line: int
    field: str
    reason: str
    product_id: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


FeedItem: TypeAlias = Product | RowError


class FeedError(WidgetServerError):
    """The feed as a whole cannot be read; the message says why and, when known, where."""


class FieldError(WidgetServerError):
    """One field value is invalid; ``field`` names it, ``reason`` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Bounds that keep a hostile or broken feed from exhausting memory or time."""

    max_file_bytes: int = 512 * 1024 * 1024
    max_rows: int = 2_000_000
    max_row_bytes: int = 128 * 1024


DEFAULT_LIMITS = FeedLimits()

# --- field values ------------------------------------------------------------------------------

_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "zł": "PLN"}
_THOUSANDS = re.compile(r"[\s'\u00a0\u202f]")
_AMOUNT = re.compile(r"\d[\d.,]*")
_PRICE_PARTS = re.compile(r"(?:([A-Za-z]+)\s*)?([^A-Za-z]*?)(?:\s*([A-Za-z]+))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AVAILABILITY: dict[str, Availability] = {"preorder": "preorder", "backorder": "backorder"}
_AVAILABILITY.update(dict.fromkeys(("instock", "available", "limitedavailability"), "in_stock"))
_AVAILABILITY.update(dict.fromkeys(("outofstock", "soldout", "discontinued"), "out_of_stock"))
_TEXT_LIMITS = {"id": 128, "title": 500, "brand": 200, "item_group_id": 128}
_TEXT_LIMITS.update(link=2048, image_link=2048)
MAX_PRICE = 1e9
MAX_QUANTITY = 1_000_000_000
_QUANTITY = re.compile(r"[0-9]{1,10}(?:\.0+)?")
QUANTITY_COLUMNS = ("quantity", "sell_on_google_quantity")
NOT_UTF8 = "is not valid UTF-8 text"  # the reason of a field that is not UTF-8


def parse_price(text: str, field: str = "price") -> tuple[float, str]:
    """Parse ``59.90 EUR``, ``59,90 EUR``, ``EUR 59.90``, ``€59.90``, ``1.299,00 EUR`` or ``59.90``.

    Returns ``(amount, currency)``; the currency is an upper-case ISO 4217 code, or ``""`` when
    the text has none. A single ``.`` is a decimal point; a single ``,`` is one too unless exactly
    three digits follow it. Raises :class:`FieldError` (naming ``field``) and nothing else.
    """
    value = text.strip()
    if not value:
        raise FieldError(field, "is empty")
    if len(value) > 64:
        raise FieldError(field, "is longer than 64 characters")
    value, currency = _split_currency(value, field)
    number = _THOUSANDS.sub("", value)
    if not _AMOUNT.fullmatch(number) or not number[-1].isdigit():
        raise FieldError(field, f"{text.strip()!r} is not a price")
    amount = float(_decimal_notation(number, field))
    if not math.isfinite(amount) or amount > MAX_PRICE:
        raise FieldError(field, f"{text.strip()!r} is out of range")
    return amount, currency


def _split_currency(value: str, field: str) -> tuple[str, str]:
    for symbol, code in _CURRENCY_SYMBOLS.items():
        if value.startswith(symbol) or value.endswith(symbol):
            return value.removeprefix(symbol).removesuffix(symbol).strip(), code
    match = _PRICE_PARTS.fullmatch(value)
    if match is None or not match[2] or (match[1] and match[3]):
        raise FieldError(field, f"{value!r} is not a price")
    currency = match[1] or match[3] or ""
    if currency and len(currency) != 3:
        raise FieldError(field, f"{currency!r} is not a currency code")
    return match[2], currency.upper()


def _decimal_notation(number: str, field: str) -> str:
    """Rewrite a number with any thousands/decimal convention to ``1234.56``."""
    dots, commas = number.count("."), number.count(",")
    if dots and commas:
        decimal = "." if number.rfind(".") > number.rfind(",") else ","
        if number.count(decimal) > 1:
            raise FieldError(field, f"{number!r} is not a price")
        thousands = "," if decimal == "." else "."
        return number.replace(thousands, "").replace(decimal, ".")
    if commas == 1 and len(number.rpartition(",")[2]) != 3:
        return number.replace(",", ".")
    if dots > 1 or commas:
        groups = re.split(r"[.,]", number)
        if any(len(group) != 3 for group in groups[1:]):
            raise FieldError(field, f"{number!r} is not a price")
        return "".join(groups)
    return number


def parse_availability(text: str) -> Availability:
    """Map ``in stock``/``in_stock``/``out of stock``/``preorder``/``backorder`` (and schema.org
    URLs such as ``https://schema.org/InStock``) to the canonical value; empty means in stock.
    Raises :class:`FieldError` for anything else."""
    key = re.sub(r"[\s_-]", "", text.rpartition("/")[2].lower())
    if not key:
        return "in_stock"
    try:
        return _AVAILABILITY[key]
    except KeyError:
        raise FieldError("availability", f"{text.strip()[:40]!r} is not a known value") from None


def parse_quantity(text: str, field: str = "quantity") -> int | None:
    """Parse a stock count such as ``12`` (or ``12.0``); empty means unknown (None). Raises
    :class:`FieldError` (naming ``field``) for anything but a whole number from 0 to 10^9."""
    value = text.strip()
    if not value:
        return None
    if not _QUANTITY.fullmatch(value):
        raise FieldError(field, f"{value[:40]!r} is not a whole number of units")
    amount = int(value.partition(".")[0])
    if amount > MAX_QUANTITY:
        raise FieldError(field, f"{value[:40]!r} is out of range")
    return amount


def _quantity(fields: Mapping[str, str]) -> int | None:
    for name in QUANTITY_COLUMNS:
        if (quantity := parse_quantity(_text(fields, name), name)) is not None:
            return quantity
    return None


def normalize_category(text: str) -> str:
    """``"Apparel>Shoes >  Running"`` -> ``"Apparel > Shoes > Running"`` (at most 10 levels)."""
    parts = [" ".join(part.split()) for part in text.split(">")]
    return " > ".join(part for part in parts if part)[:750]


def _text(fields: Mapping[str, str], name: str, *, required: bool = False) -> str:
    raw = fields.get(name, "")
    if _has_surrogates(raw):
        raise FieldError(name, NOT_UTF8)
    value = " ".join(raw.split())
    if _CONTROL.search(value):
        raise FieldError(name, "contains control characters")
    if required and not value:
        raise FieldError(name, "is missing")
    limit = _TEXT_LIMITS.get(name, 750)
    if len(value) > limit:
        raise FieldError(name, f"is longer than {limit} characters")
    return value


safe_url = safe_link  # the catalog's name for it


def _url(fields: Mapping[str, str], name: str) -> str:
    value = _text(fields, name)
    if value and safe_url(value) is None:
        raise FieldError(name, "must be an http(s) URL or a path")
    return value


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_fields(fields: Mapping[str, str], line: int) -> Product | RowError:
    """Build a :class:`Product` from one row (normalised column name -> raw text).

    Never raises: the first invalid field comes back as a :class:`RowError` for ``line``. A sale
    price that is not lower than the price is dropped (it is not a discount).
    """
    try:
        return _product(fields)
    except FieldError as exc:
        raw_id = fields.get("id", "").strip()
        product_id = raw_id if len(raw_id) <= 128 and not _has_surrogates(raw_id) else ""
        return RowError(line, exc.field, exc.reason, product_id)


def _product(fields: Mapping[str, str]) -> Product:
    product_id = _text(fields, "id", required=True)
    title = _text(fields, "title", required=True)
    price, currency = parse_price(_text(fields, "price", required=True))
    sale_price: float | None = None
    if raw_sale := _text(fields, "sale_price"):
        sale_price, sale_currency = parse_price(raw_sale, "sale_price")
        if sale_currency and currency and sale_currency != currency:
            raise FieldError("sale_price", f"is in {sale_currency}, the price in {currency}")
        if sale_price >= price:
            sale_price = None
    return Product(
        id=product_id,
        title=title,
        link=_url(fields, "link"),
        image_link=_url(fields, "image_link"),
        price=price,
        sale_price=sale_price,
        currency=currency,
        availability=parse_availability(_text(fields, "availability")),
        brand=_text(fields, "brand"),
        product_type=normalize_category(_text(fields, "product_type")),
        google_product_category=normalize_category(_text(fields, "google_product_category")),
        item_group_id=_text(fields, "item_group_id"),
        quantity=_quantity(fields),
    )


def column_name(raw: str) -> str:
    """``"g:image link"`` / ``"Image-Link"`` -> ``"image_link"``."""
    name = raw.strip().lstrip("\ufeff").lower().removeprefix("g:")
    return re.sub(r"[\s-]+", "_", name)


@dataclass(slots=True)
class _FirstLines:
    """Where each product id was first seen; a later row with the same id is a row error."""

    lines: dict[str, int] = field(default_factory=dict)

    def check(self, item: FeedItem, line: int) -> FeedItem:
        if isinstance(item, Product) and (first := self.lines.setdefault(item.id, line)) != line:
            return RowError(line, "id", f"repeats the id of line {first}", item.id)
        return item


# --- TSV / CSV ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Lines:
    """Physical lines of a binary stream, decoded with ``surrogateescape`` and bounded in size.

    An over-long line is skipped (read to its end without keeping it) and replaced by an empty
    line; its number is remembered in ``oversized`` so the caller can report it.
    """

    stream: IO[bytes]
    limits: FeedLimits
    number: int = 0
    bytes_read: int = 0
    oversized: deque[int] = field(default_factory=deque)

    def __iter__(self) -> Iterator[str]:
        limit = self.limits.max_row_bytes
        while raw := self.stream.readline(limit + 1):
            self.number += 1
            self._count(len(raw))
            if len(raw) > limit and not raw.endswith(b"\n"):
                self._skip_rest_of_line()
                self.oversized.append(self.number)
                raw = b"\n"
            if self.number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            yield raw.decode("utf-8", "surrogateescape").replace("\x00", "\udc80")

    def _skip_rest_of_line(self) -> None:
        while chunk := self.stream.readline(64 * 1024):
            self._count(len(chunk))
            if chunk.endswith(b"\n"):
                return

    def _count(self, size: int) -> None:
        self.bytes_read += size
        if self.bytes_read > self.limits.max_file_bytes:
            raise FeedError(f"the feed is larger than {self.limits.max_file_bytes} bytes")


def parse_delimited(stream: IO[bytes], limits: FeedLimits = DEFAULT_LIMITS) -> Iterator[FeedItem]:
    """Parse a tab- or comma-separated feed with a header row (UTF-8, with or without BOM).

    The delimiter is a tab when the header contains one, else a comma; fields may be quoted.
    Yields one item per data row (blank lines are skipped). Raises :class:`FeedError` when the
    feed is empty, the header is unusable or required columns are missing, or a limit is exceeded.
    """
    lines, first_lines = _Lines(stream, limits), _FirstLines()
    physical = iter(lines)
    header_line = next(physical, None)
    if header_line is None:
        raise FeedError("the feed is empty")
    if lines.oversized:
        raise FeedError(f"line 1: the header is longer than {limits.max_row_bytes} bytes")
    delimiter = "\t" if "\t" in header_line else ","
    try:
        columns = _header(next(csv.reader([header_line], delimiter=delimiter), []))
    except csv.Error as exc:
        raise FeedError(f"line 1: the header is not valid CSV: {exc}") from None
    reader = csv.reader(physical, delimiter=delimiter)
    rows, end = 0, 1
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            values, problem = [], f"is not valid CSV: {exc}"
        else:
            problem = ""
        end = reader.line_num + 1
        while lines.oversized and lines.oversized[0] <= end:  # in order: consume as we go
            lines.oversized.popleft()
            problem = f"is longer than {limits.max_row_bytes} bytes"
        if not values and not problem:
            continue
        rows += 1
        if rows > limits.max_rows:
            raise FeedError(f"the feed has more than {limits.max_rows} rows")
        yield first_lines.check(_delimited_row(columns, values, start, problem, limits), start)


def _header(names: list[str]) -> list[str]:
    columns = [column_name(name) for name in names]
    if any(_has_surrogates(name) for name in columns):
        raise FeedError("line 1: the header is not UTF-8 text (is this a TSV/CSV feed?)")
    if duplicates := sorted({name for name in columns if name and columns.count(name) > 1}):
        raise FeedError(f"line 1: duplicate columns: {', '.join(duplicates)}")
    if missing := [name for name in REQUIRED_COLUMNS if name not in columns]:
        found = ", ".join(name[:40] for name in columns[:12]) or "nothing"
        raise FeedError(
            f"line 1: missing required columns: {', '.join(missing)} (found: {found}); "
            "the header must name the columns, separated by tabs or commas"
        )
    return columns


def _delimited_row(
    columns: list[str], values: list[str], line: int, problem: str, limits: FeedLimits
) -> FeedItem:
    if problem:
        return RowError(line, "row", problem)
    if len(values) > len(columns):
        return RowError(line, "row", f"has {len(values)} fields, the header {len(columns)}")
    if sum(len(value) for value in values) > limits.max_row_bytes:
        return RowError(line, "row", f"is longer than {limits.max_row_bytes} bytes")
    return parse_fields(dict(zip(columns, values, strict=False)), line)


# --- XML: RSS 2.0 <item> and Atom <entry> with the g: namespace --------------------------------

_PLAIN_FIELDS = frozenset({"title", "link", "description"})
_ITEM_TAGS = frozenset({(None, "item"), (ATOM_NS, "entry")})
_ROOT_TAGS = frozenset({(None, "rss"), (ATOM_NS, "feed")})


class _FeedHandler(ContentHandler):
    """Collects the direct children of each ``<item>``/``<entry>`` into a field mapping.

    ``g:`` fields win over plain RSS/Atom ones (``<g:title>`` over ``<title>``); the Atom
    ``<link href>`` gives the link. Finished items wait in ``items`` until drained.
    """

    def __init__(self, limits: FeedLimits) -> None:
        super().__init__()
        self.items: list[FeedItem] = []
        self._limits = limits
        self._locator: Locator | None = None
        self._depth = self._item_depth = self._line = self._rows = self._size = 0
        self._fields: dict[str, str] = {}
        self._field: tuple[str, bool] | None = None
        self._text: list[str] = []
        self._first_lines = _FirstLines()

    def setDocumentLocator(self, locator: Locator) -> None:
        self._locator = locator

    def startElementNS(
        self, name: tuple[str | None, str], qname: str | None, attrs: AttributesNSImpl
    ) -> None:
        self._depth += 1
        tag = (name[0] or None, name[1])
        if self._depth == 1 and tag not in _ROOT_TAGS:
            raise FeedError(
                f"the root element is <{tag[1][:40]}>, not RSS 2.0 <rss> or Atom <feed>"
            )
        if not self._item_depth and tag in _ITEM_TAGS:
            self._item_depth, self._size, self._fields = self._depth, 0, {}
            self._line = (self._locator.getLineNumber() if self._locator else None) or 0
        elif self._item_depth and self._depth == self._item_depth + 1:
            self._start_field(tag, attrs)

    def _start_field(self, tag: tuple[str | None, str], attrs: AttributesNSImpl) -> None:
        uri, local = tag
        self._field, self._text = None, []
        if uri == GOOGLE_NS:
            self._field = (column_name(local), True)
        elif uri == ATOM_NS and local == "link":
            if attrs.get((None, "rel"), "alternate") == "alternate":
                self._fields.setdefault("link", attrs.get((None, "href"), ""))
        elif uri in (None, ATOM_NS) and local in _PLAIN_FIELDS:
            self._field = (local, False)

    def characters(self, content: str) -> None:
        if self._field is not None:
            self._size += len(content)
            if self._size <= self._limits.max_row_bytes:
                self._text.append(content)

    def endElementNS(self, name: tuple[str | None, str], qname: str | None) -> None:
        if self._item_depth and self._depth == self._item_depth + 1 and self._field:
            key, google = self._field
            if google:
                self._fields[key] = "".join(self._text)
            else:
                self._fields.setdefault(key, "".join(self._text))
            self._field = None
        elif self._item_depth and self._depth == self._item_depth:
            self._finish_item()
        self._depth -= 1

    def _finish_item(self) -> None:
        self._rows += 1
        if self._rows > self._limits.max_rows:
            raise FeedError(f"the feed has more than {self._limits.max_rows} items")
        if self._size > self._limits.max_row_bytes:
            limit = self._limits.max_row_bytes
            self.items.append(RowError(self._line, "item", f"is longer than {limit} characters"))
        else:
            product = parse_fields(self._fields, self._line)
            self.items.append(self._first_lines.check(product, self._line))
        self._item_depth = 0

    def drain(self) -> list[FeedItem]:
        items, self.items = self.items, []
        return items


def _safe_sax_parser(handler: ContentHandler) -> IncrementalParser:
    """An expat SAX parser that refuses DTDs, so no entity expansion or external entity ever."""
    parser: IncrementalParser = DefusedExpatParser(
        forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    parser.setFeature(feature_namespaces, True)
    parser.setContentHandler(handler)
    handler.setDocumentLocator(cast(Locator, parser))  # expat's reader is its own locator
    return parser


def parse_xml(stream: IO[bytes], limits: FeedLimits = DEFAULT_LIMITS) -> Iterator[FeedItem]:
    """Parse an RSS 2.0 (``<item>``) or Atom (``<entry>``) feed with ``g:`` fields, streaming.

    Yields one item per ``<item>``/``<entry>``, its line being where the element starts. Raises
    :class:`FeedError` for malformed XML, any DTD (which rules out entity expansion and external
    entities), an unexpected root element, or an exceeded limit.
    """
    handler = _FeedHandler(limits)
    parser = _safe_sax_parser(handler)
    total = 0
    try:
        while chunk := stream.read(64 * 1024):
            total += len(chunk)
            if total > limits.max_file_bytes:
                raise FeedError(f"the feed is larger than {limits.max_file_bytes} bytes")
            parser.feed(chunk)
            yield from handler.drain()
        parser.close()
    except SAXParseException as exc:
        where, reason = exc.getLineNumber(), exc.getMessage()
        raise FeedError(f"line {where}: the feed is not well-formed XML: {reason}") from None
    except DefusedXmlException:
        raise FeedError("DTDs and entity declarations are not allowed in feeds") from None
    yield from handler.drain()


FeedFormat: TypeAlias = Literal["xml", "delimited"]

# Files that are plainly not a text feed, by their first bytes, and what to do instead.
_NOT_A_FEED = (
    (b"\x1f\x8b", "the file is compressed (gzip); upload the uncompressed feed"),
    (b"PK\x03\x04", "the file is a ZIP archive or an Excel workbook; save the sheet as CSV "
     "(UTF-8) or tab-separated text"),
    (b"\xd0\xcf\x11\xe0", "the file is an Excel workbook; save the sheet as CSV (UTF-8) or "
     "tab-separated text"),
    (b"\xff\xfe", "the file is UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "the file is UTF-16 text; save it as UTF-8"),
    (b"%PDF", "the file is a PDF, not a feed"),
)  # fmt: skip


def detect_format(stream: IO[bytes]) -> FeedFormat:
    """Whether a seekable binary stream holds an XML or a TSV/CSV feed, judged by its first
    bytes; the stream's position is kept.

    Raises :class:`FeedError` when the stream cannot seek, or when it is plainly no text feed
    (gzip, ZIP or Excel, UTF-16, PDF), so the message can say what to upload instead.
    """
    if not stream.seekable():
        raise FeedError("the feed must be a regular file")
    start = stream.tell()
    raw = stream.read(512)
    stream.seek(start)
    for magic, message in _NOT_A_FEED:
        if raw.startswith(magic):
            raise FeedError(message)
    return "xml" if raw.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<") else "delimited"


def parse_feed(stream: IO[bytes], limits: FeedLimits = DEFAULT_LIMITS) -> Iterator[FeedItem]:
    """Parse an XML or TSV/CSV feed from a seekable binary stream, choosing by its content.

    Raises :class:`FeedError` as :func:`detect_format` and the chosen parser do.
    """
    if detect_format(stream) == "xml":
        return parse_xml(stream, limits)
    return parse_delimited(stream, limits)
