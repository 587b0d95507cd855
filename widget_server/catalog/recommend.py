"""Similar products: content similarity blended with shopping behaviour, from an in-process index.

Pure: no I/O. A :class:`SimilarityIndex` is built from one site's catalog and answers lookups in a
bounded time whatever the catalog size: candidates come from inverted indexes (rare title tokens,
the category path from the leaf up, the brand; category and brand lists are sorted by price, so
the nearest prices are taken first), at most ``candidate_budget`` of them are scored, and the best
``k`` are kept. The score of a candidate ``c`` for an anchor product ``a`` is::

    content = w_category * shared category depth / depth of the deeper path
            + w_brand    * (same brand)
            + w_price    * max(0, 1 - |ln(price_c / price_a)| / ln(price_ratio))
            + w_title    * IDF-weighted Jaccard similarity of the title tokens
    score   = content + w_behaviour * behaviour[c]      (behaviour in [0, 1])

The content weights sum to 1. Ties are broken by product id, so results are deterministic.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from .feeds import Product

_TOKEN = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(("a", "an", "and", "by", "de", "der", "des", "die", "das", "du", "et"))
_STOPWORDS |= {"for", "in", "la", "le", "mit", "of", "on", "the", "to", "und", "with"}
_NO_PRICE = -1e9
_NO_BRAND = -1
_SortedPostings = tuple[list[float], list[int]]


def title_tokens(title: str) -> set[str]:
    """Lower-case word tokens of a title without stopwords and one-letter words (digits stay)."""
    return {
        token
        for token in _TOKEN.findall(title.casefold())
        if (len(token) > 1 or token.isdigit()) and token not in _STOPWORDS
    }


@dataclass(frozen=True, slots=True)
class SimilarityWeights:
    """Weights of the score parts and the bounds of candidate generation.

    ``category + brand + price + title`` is 1, so content scores lie in [0, 1]; ``behaviour``
    weighs the behaviour signal on top. Prices ``price_ratio`` times apart add nothing. At most
    about ``candidate_budget`` products are scored per anchor; title tokens shared by more than
    ``max_token_postings`` products are too common to retrieve candidates by.
    """

    category: float = 0.30
    brand: float = 0.15
    price: float = 0.15
    title: float = 0.40
    behaviour: float = 0.60
    price_ratio: float = 3.0
    candidate_budget: int = 600
    max_token_postings: int = 1000


DEFAULT_WEIGHTS = SimilarityWeights()


class ScoredProduct(msgspec.Struct, frozen=True):
    """A recommended product with its score and the parts it is made of."""

    product: Product
    score: float
    content: float
    behaviour: float


def behaviour_weights(
    coview: Mapping[str, float],
    cocart: Mapping[str, float],
    *,
    cart_factor: float = 2.0,
    saturation: float = 50.0,
) -> dict[str, float]:
    """Blend co-view and co-cart counts into a signal in [0, 1] per product id.

    Counts are log-scaled (``log1p``), a co-cart counts ``cart_factor`` times a co-view, and the
    signal reaches 1 at the equivalent of ``saturation`` co-views. Ids with no positive count are
    left out.
    """
    raw: dict[str, float] = {}
    for product_id, count in coview.items():
        if count > 0:
            raw[product_id] = math.log1p(count)
    for product_id, count in cocart.items():
        if count > 0:
            raw[product_id] = raw.get(product_id, 0.0) + cart_factor * math.log1p(count)
    full = math.log1p(saturation)
    return {product_id: min(1.0, value / full) for product_id, value in raw.items()}


def _window(postings: _SortedPostings, center: float, size: int) -> list[int]:
    """The ``size`` entries of a price-sorted posting list nearest to ``center``."""
    keys, positions = postings
    if size >= len(positions):
        return positions
    low = max(0, bisect_left(keys, center) - size // 2)
    low = min(low, len(positions) - size)
    return positions[low : low + size]


class SimilarityIndex:
    """Similar-product lookups over one catalog; immutable once built, safe to share."""

    def __init__(self, products: Sequence[Product], weights: SimilarityWeights) -> None:
        """Index ``products`` (unique ids, sorted by id); use :meth:`build` instead."""
        self._products = products
        self._weights = weights
        self._position = {product.id: i for i, product in enumerate(products)}
        self._available = [product.available for product in products]
        self._chains: list[tuple[int, ...]] = [()]
        self._leaf: list[int] = []
        self._brand: list[int] = []
        self._group: list[int] = []
        self._logp: list[float] = []
        self._tokens: list[frozenset[int]] = []
        self._df: list[int] = []
        self._index_features()
        count = max(len(products), 1)
        self._idf = [math.log(1.0 + count / df) for df in self._df]
        idf = self._idf
        self._token_weight = [sum(map(idf.__getitem__, tokens)) for tokens in self._tokens]
        self._index_postings()

    @classmethod
    def build(
        cls, products: Iterable[Product], weights: SimilarityWeights = DEFAULT_WEIGHTS
    ) -> SimilarityIndex:
        """Index a catalog; a repeated id keeps its last product. Runs in O(catalog size)."""
        unique = {product.id: product for product in products}
        return cls([unique[product_id] for product_id in sorted(unique)], weights)

    def _index_features(self) -> None:
        nodes: dict[str, int] = {}
        brands: dict[str, int] = {}
        groups: dict[str, int] = {}
        vocabulary: dict[str, int] = {}
        for i, product in enumerate(self._products):
            self._leaf.append(self._category_node(product, nodes))
            brand = product.brand.casefold()
            self._brand.append(brands.setdefault(brand, len(brands)) if brand else _NO_BRAND)
            group = product.item_group_id
            self._group.append(groups.setdefault(group, len(groups)) if group else -1 - i)
            price = product.effective_price
            self._logp.append(math.log(price) if price > 0 else _NO_PRICE)
            tokens = frozenset(
                vocabulary.setdefault(token, len(vocabulary))
                for token in title_tokens(product.title)
            )
            self._df.extend(0 for _ in range(len(vocabulary) - len(self._df)))
            for token in tokens:
                self._df[token] += 1
            self._tokens.append(tokens)

    def _category_node(self, product: Product, nodes: dict[str, int]) -> int:
        """Intern every prefix of the category path; return the node of the full path (0: none)."""
        path = product.product_type or product.google_product_category
        node, prefix = 0, ""
        parts = [part.strip() for part in path.casefold().split(">")]
        for part in [part for part in parts if part][:10]:
            prefix = f"{prefix}>{part}"
            known = nodes.get(prefix)
            if known is None:
                known = nodes[prefix] = len(self._chains)
                self._chains.append((*self._chains[node], known))
            node = known
        return node

    def _index_postings(self) -> None:
        by_node: dict[int, list[int]] = {}
        by_brand: dict[int, list[int]] = {}
        by_token: dict[int, list[int]] = {}
        for i, available in enumerate(self._available):
            if not available:
                continue
            for node in self._chains[self._leaf[i]]:
                by_node.setdefault(node, []).append(i)
            if self._brand[i] != _NO_BRAND:
                by_brand.setdefault(self._brand[i], []).append(i)
            for token in self._tokens[i]:
                by_token.setdefault(token, []).append(i)
        self._by_node = {node: self._by_price(found) for node, found in by_node.items()}
        self._by_brand = {brand: self._by_price(found) for brand, found in by_brand.items()}
        self._by_token = by_token
        self._in_stock = [i for i, available in enumerate(self._available) if available]
        self._by_any_price = self._by_price(self._in_stock)

    def _by_price(self, positions: list[int]) -> _SortedPostings:
        ordered = sorted(positions, key=self._logp.__getitem__)
        return [self._logp[i] for i in ordered], ordered

    def __len__(self) -> int:
        return len(self._products)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._position

    def get(self, product_id: str) -> Product | None:
        """The indexed product with this id, if any."""
        position = self._position.get(product_id)
        return None if position is None else self._products[position]

    def similar(
        self,
        product_id: str,
        *,
        k: int = 8,
        exclude: Collection[str] = frozenset(),
        behaviour: Mapping[str, float] | None = None,
    ) -> list[ScoredProduct]:
        """Up to ``k`` products most similar to ``product_id``, best first, ties by id.

        Never returns the product itself, a variant of its item group, an out-of-stock product,
        an id in ``exclude`` or a product scoring 0, and at most one product per item group.
        ``behaviour`` maps product ids to a signal in [0, 1] (see :func:`behaviour_weights`).
        An unknown id gives ``[]``.
        """
        anchor = self._position.get(product_id)
        if anchor is None or k <= 0:
            return []
        signal = self._signal(behaviour)
        candidates = self._candidates(anchor, self._weights.candidate_budget, signal)
        scores = self._content_scores(anchor, sorted(candidates))
        banned = self._positions(exclude) | {anchor}
        return self._select(scores, k, banned, {self._group[anchor]}, signal)

    def similar_exhaustive(
        self,
        product_id: str,
        *,
        k: int = 8,
        exclude: Collection[str] = frozenset(),
        behaviour: Mapping[str, float] | None = None,
    ) -> list[ScoredProduct]:
        """Like :meth:`similar` but scoring every product: the reference the index approximates."""
        anchor = self._position.get(product_id)
        if anchor is None or k <= 0:
            return []
        scores = self._content_scores(anchor, self._in_stock)
        banned = self._positions(exclude) | {anchor}
        return self._select(scores, k, banned, {self._group[anchor]}, self._signal(behaviour))

    def similar_for_session(
        self,
        viewed_ids: Sequence[str],
        cart_ids: Collection[str] = (),
        *,
        k: int = 8,
        exclude: Collection[str] = frozenset(),
        behaviour: Mapping[str, float] | None = None,
        recent: int = 3,
        decay: float = 0.6,
    ) -> list[ScoredProduct]:
        """Products similar to what the visitor looked at last, best first, ties by id.

        ``viewed_ids`` is ordered oldest to newest, as the session keeps it. The last ``recent``
        distinct known products are the anchors (the cart's products when nothing was viewed);
        the newest weighs 1, the one before ``decay``, then ``decay**2``... Anchors, cart
        products, their item groups and ``exclude`` never come back; otherwise as :meth:`similar`.
        """
        cart = self._positions(cart_ids)
        anchors = self._anchors(viewed_ids, recent) or sorted(cart)[:recent]
        if not anchors or k <= 0:
            return []
        signal = self._signal(behaviour)
        budget = max(self._weights.candidate_budget // len(anchors), 100)
        candidates: set[int] = set()
        for anchor in anchors:
            candidates |= self._candidates(anchor, budget, signal)
        weights = [decay**rank for rank in range(len(anchors))]
        total = sum(weights)
        ordered = sorted(candidates)
        blended = dict.fromkeys(ordered, 0.0)
        for anchor, weight in zip(anchors, weights, strict=True):
            share = weight / total
            for position, score in self._content_scores(anchor, ordered).items():
                blended[position] += share * score
        banned = self._positions(exclude) | cart | set(anchors)
        groups = {self._group[position] for position in (*anchors, *cart)}
        return self._select(blended, k, banned, groups, signal)

    def _anchors(self, viewed_ids: Sequence[str], recent: int) -> list[int]:
        anchors: list[int] = []
        for product_id in reversed(viewed_ids):
            position = self._position.get(product_id)
            if position is not None and position not in anchors:
                anchors.append(position)
                if len(anchors) == recent:
                    break
        return anchors

    def _positions(self, product_ids: Collection[str]) -> set[int]:
        position = self._position
        return {position[i] for i in product_ids if i in position}

    def _signal(self, behaviour: Mapping[str, float] | None) -> dict[int, float]:
        if not behaviour:
            return {}
        signal: dict[int, float] = {}
        for product_id, value in behaviour.items():
            position = self._position.get(product_id)
            if position is not None and self._available[position] and value > 0:
                signal[position] = min(float(value), 1.0)
        return signal

    def _candidates(self, anchor: int, budget: int, signal: Mapping[int, float]) -> set[int]:
        """At most about ``budget`` in-stock products likely to score well against ``anchor``."""
        candidates = set(signal)
        cap = self._weights.max_token_postings
        for token in sorted(self._tokens[anchor], key=self._df.__getitem__):
            posting = self._by_token.get(token, ())
            if len(posting) > cap or len(candidates) + len(posting) > budget // 2:
                break
            candidates.update(posting)
        chain = self._chains[self._leaf[anchor]]
        nodes = [*chain[-1:], *reversed(chain[:-1])]  # the leaf, then its ancestors
        sources = [self._by_node[node] for node in nodes if node in self._by_node]
        if self._brand[anchor] in self._by_brand:  # the brand right after the leaf
            sources.insert(min(1, len(sources)), self._by_brand[self._brand[anchor]])
        center = self._logp[anchor]
        for postings in sources:
            room = budget - len(candidates)
            if room <= 0:
                return candidates
            candidates.update(_window(postings, center, max(room // 2, min(room, 50))))
        if (room := budget - len(candidates)) > 0:  # then the nearest prices of the whole catalog
            candidates.update(_window(self._by_any_price, center, room))
        return candidates

    def _content_scores(self, anchor: int, candidates: Iterable[int]) -> dict[int, float]:
        """The content score of every candidate against ``anchor`` (the hot loop).

        The result keeps the order of ``candidates``; pass them sorted so that :meth:`_select`
        breaks ties by id.
        """
        weights = self._weights
        w_category, w_brand, w_price, w_title = (
            weights.category, weights.brand, weights.price, weights.title
        )  # fmt: skip
        span = math.log(weights.price_ratio)
        slope = w_price / span
        leaf, brand, logp, tokens = self._leaf, self._brand, self._logp, self._tokens
        token_weight, idf = self._token_weight, self._idf
        anchor_chain = self._chains[leaf[anchor]]
        anchor_nodes, depth = set(anchor_chain), len(anchor_chain)
        anchor_brand = brand[anchor] if brand[anchor] != _NO_BRAND else -2
        anchor_price, priced = logp[anchor], logp[anchor] > _NO_PRICE
        anchor_tokens, anchor_weight = tokens[anchor], token_weight[anchor]
        by_leaf: dict[int, float] = {}
        scores: dict[int, float] = {}
        for c in candidates:
            node = leaf[c]
            score = by_leaf.get(node)
            if score is None:
                chain = self._chains[node]
                shared = len(anchor_nodes.intersection(chain))
                score = by_leaf[node] = w_category * shared / (max(depth, len(chain)) or 1)
            if brand[c] == anchor_brand:
                score += w_brand
            if priced:
                distance = abs(anchor_price - logp[c])
                if distance < span:
                    score += w_price - slope * distance
            common = anchor_tokens & tokens[c]
            if common:
                weight = sum(map(idf.__getitem__, common))
                score += w_title * weight / (anchor_weight + token_weight[c] - weight)
            scores[c] = score
        return scores

    def _select(
        self,
        scores: dict[int, float],
        k: int,
        banned: set[int],
        banned_groups: set[int],
        signal: Mapping[int, float],
    ) -> list[ScoredProduct]:
        """The best ``k`` by score then id, skipping banned products and repeated item groups.

        ``scores`` (content scores in id order) is updated in place with the behaviour bonus.
        """
        w_behaviour = self._weights.behaviour
        for c, value in signal.items():
            if c in scores:
                scores[c] += w_behaviour * value
        # A stable sort keeps equal scores in insertion (id) order, even with reverse=True.
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        picked: list[ScoredProduct] = []
        groups = set(banned_groups)
        for c in ranked:
            if scores[c] <= 0.0:
                break
            if c in banned or self._group[c] in groups or not self._available[c]:
                continue
            groups.add(self._group[c])
            bonus = w_behaviour * signal.get(c, 0.0)
            picked.append(ScoredProduct(self._products[c], scores[c], scores[c] - bonus, bonus))
            if len(picked) == k:
                break
        return picked
