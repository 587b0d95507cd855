"""Similar products: exclusions, variant collapsing, determinism, behaviour, and ranking quality."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.catalog.feeds import Product
from widget_server.catalog.recommend import (
    ScoredProduct,
    SimilarityIndex,
    SimilarityWeights,
    behaviour_weights,
    title_tokens,
)

SHOES = "Apparel > Shoes > Running Shoes"
JACKETS = "Apparel > Outerwear > Jackets"


def product(id: str, title: str, **fields: object) -> Product:
    values: dict[str, object] = {"price": 100.0, "brand": "Korro", "product_type": SHOES}
    values.update(fields)
    return Product(id=id, title=title, **values)  # type: ignore[arg-type]


def ids(results: list[ScoredProduct]) -> list[str]:
    return [r.product.id for r in results]


@pytest.fixture
def shop() -> SimilarityIndex:
    return SimilarityIndex.build(
        [
            product("A1", "Korro Tempo Road Runner - Black", item_group_id="GA"),
            product("A2", "Korro Tempo Road Runner - Navy", item_group_id="GA"),
            product("B1", "Korro Tempo Trail Runner - Black", item_group_id="GB"),
            product("B2", "Korro Tempo Trail Runner - Sand", item_group_id="GB"),
            product("C1", "Korro Glide Road Runner - Olive", price=110.0),
            product("D1", "Korro Tempo Racer - Black", availability="out_of_stock"),
            product("E1", "Stridewell Arc Road Runner - Coral", brand="Stridewell", price=95.0),
            product("F1", "Fjellmark Ridge Rain Jacket", brand="Fjellmark", product_type=JACKETS),
            product("F2", "Fjellmark Coast Down Jacket", brand="Fjellmark", product_type=JACKETS),
            product("G1", "Korro Tempo Road Runner Kids", price=60.0, availability="preorder"),
        ]
    )


def test_similar_excludes_the_product_its_variants_and_out_of_stock(shop: SimilarityIndex) -> None:
    found = ids(shop.similar("A1", k=20))
    assert "A1" not in found and "A2" not in found  # itself and its own group
    assert "D1" not in found  # out of stock
    assert found[0] == "B1"  # same brand, model, category and price
    assert set(found[-2:]) == {"F1", "F2"}  # another category and brand: last
    assert "G1" in found  # preorder is offered


def test_one_product_per_item_group(shop: SimilarityIndex) -> None:
    found = shop.similar("C1", k=20)
    groups = [r.product.item_group_id or r.product.id for r in found]
    assert len(groups) == len(set(groups))
    assert len({"A1", "A2"} & set(ids(found))) == 1
    assert len({"B1", "B2"} & set(ids(found))) == 1


def test_exclude_set_and_unknown_ids(shop: SimilarityIndex) -> None:
    found = ids(shop.similar("A1", k=20, exclude={"B1", "C1", "nope"}))
    assert "B1" not in found and "C1" not in found
    assert "B2" in found  # only the listed id is excluded, not its group
    assert shop.similar("nope") == []
    assert shop.similar("A1", k=0) == []


def test_out_of_stock_product_still_gets_recommendations(shop: SimilarityIndex) -> None:
    assert ids(shop.similar("D1", k=3))[0] in {"A1", "A2", "B1", "B2"}


def test_results_are_deterministic_and_ties_go_by_id() -> None:
    twins = [product(f"T{n}", "Korro Tempo Road Runner") for n in (5, 3, 9, 1, 7)]
    anchor = product("X", "Korro Tempo Road Runner")
    first = SimilarityIndex.build([*twins, anchor])
    shuffled = [*twins, anchor]
    random.Random(4).shuffle(shuffled)
    second = SimilarityIndex.build(shuffled)
    assert ids(first.similar("X", k=5)) == ["T1", "T3", "T5", "T7", "T9"]
    assert first.similar("X", k=5) == second.similar("X", k=5) == first.similar("X", k=5)


def test_behaviour_changes_the_ranking(shop: SimilarityIndex) -> None:
    plain = ids(shop.similar("A1", k=5))
    assert plain.index("E1") > 0
    boosted = shop.similar("A1", k=5, behaviour={"E1": 1.0, "D1": 1.0, "zz": 1.0})
    assert ids(boosted)[0] == "E1"
    assert "D1" not in ids(boosted)  # behaviour never brings back an out-of-stock product
    top = boosted[0]
    assert top.behaviour == pytest.approx(0.6) and top.score == pytest.approx(top.content + 0.6)
    assert "F1" in ids(shop.similar("A1", k=2, behaviour={"F1": 1.0}))


def test_behaviour_weights_are_log_scaled_and_bounded() -> None:
    weights = behaviour_weights({"a": 1, "b": 10, "c": 1000, "d": 0}, {"b": 3})
    assert set(weights) == {"a", "b", "c"}
    assert 0 < weights["a"] < weights["b"] <= weights["c"] == 1.0
    assert weights["a"] == pytest.approx(math.log1p(1) / math.log1p(50))
    alone = behaviour_weights({"b": 10}, {})
    assert weights["b"] > alone["b"]  # carted together counts on top of viewed together


def test_session_blends_recent_views_and_skips_cart(shop: SimilarityIndex) -> None:
    found = ids(shop.similar_for_session(["F1", "E1", "A1"], cart_ids={"B2"}, k=10))
    assert not {"A1", "A2", "E1", "F1", "B1", "B2"} & set(found)  # anchors, cart and groups
    assert found[0] == "C1"
    assert ids(shop.similar_for_session(["A1", "F1"], k=1)) == ["F2"]  # the newest weighs most
    assert ids(shop.similar_for_session(["F1", "A1"], k=1)) == ["B1"]
    assert ids(shop.similar_for_session(["F1", "A1", "F1"], k=1)) == ["F2"]
    assert ids(shop.similar_for_session([], cart_ids={"A1"}, k=3))[0] == "B1"
    assert shop.similar_for_session(["unknown"]) == []


def test_products_without_a_category_do_not_share_one() -> None:
    index = SimilarityIndex.build(
        [
            product("U1", "Alpha", product_type="", brand="", price=10.0),
            product("U2", "Beta", product_type="", brand="", price=500.0),
        ]
    )
    assert index.similar("U1") == []  # nothing in common at all


def test_title_tokens() -> None:
    assert title_tokens("Korro  Tempo Road-Runner / Black & the 2 Pack") == {
        "korro", "tempo", "road", "runner", "black", "2", "pack"
    }  # fmt: skip


# --- ranking quality on a catalog with known clusters --------------------------------------------

COLOURS = ("Black", "Navy", "Olive", "Sand", "Grey", "Coral")
ADJECTIVES = ("Classic", "Pro", "Lite", "Everyday", "Premium", "Sport")


def clustered_catalog(clusters: int = 50, size: int = 20, seed: int = 11) -> list[Product]:
    """``clusters`` groups of ``size`` products, the cluster number being the id's prefix.

    A cluster shares a category leaf (with four other clusters), a brand (with another cluster),
    three model words (which other clusters may reuse) and a price band, but noisily: a quarter
    of the products lack the brand, a fifth have no model word in the title, some are filed in
    a neighbouring leaf, and prices spread +-35% around the cluster's base price.
    """
    rng = random.Random(seed)
    leaves = max(1, clusters // 5)
    syllables = ("ka", "lo", "mi", "ren", "tor", "vi", "sa", "nu")
    words = ["".join(rng.choices(syllables, k=2)) for _ in range(clusters * 3)]
    products: list[Product] = []
    for cluster in range(clusters):
        brand = f"Brand{(cluster * 7) % max(1, clusters // 2)}"
        models = words[cluster * 3 : cluster * 3 + 3]
        base = math.exp(rng.uniform(math.log(10), math.log(400)))
        for j in range(size):
            leaf = cluster % leaves if rng.random() > 0.15 else (cluster + 1) % leaves
            picked = rng.sample(models, rng.choice((0, 1, 1, 2, 2)))
            title = " ".join([brand, *picked, rng.choice(ADJECTIVES), "-", rng.choice(COLOURS)])
            products.append(
                Product(
                    id=f"c{cluster:03d}-{j:02d}-{rng.randrange(10**6):06d}",
                    title=title,
                    price=round(base * rng.uniform(0.65, 1.35), 2),
                    brand="" if rng.random() < 0.25 else brand,
                    product_type=f"Dept {leaf % 3} > Aisle {leaf}",
                    item_group_id=f"g{cluster}-{j // 2}" if rng.random() < 0.3 else "",
                    availability="out_of_stock" if rng.random() < 0.05 else "in_stock",
                )
            )
    return products


def precision_at_8(
    index: SimilarityIndex, queries: list[str], *, exhaustive: bool = False
) -> float:
    def cluster(product_id: str) -> str:
        return product_id.partition("-")[0]

    scores = []
    for query in queries:
        found = (index.similar_exhaustive if exhaustive else index.similar)(query, k=8)
        scores.append(sum(cluster(r.product.id) == cluster(query) for r in found) / 8)
    return statistics.fmean(scores)


def test_precision_at_8_on_known_clusters(record_property: Callable[[str, object], None]) -> None:
    catalog = clustered_catalog()
    index = SimilarityIndex.build(catalog)
    queries = [p.id for p in catalog if p.available]
    precision = precision_at_8(index, queries)
    record_property("precision_at_8", round(precision, 4))
    print(f"precision@8 = {precision:.4f} over {len(queries)} queries")
    assert precision >= 0.8


def test_index_agrees_with_scoring_every_product() -> None:
    catalog = clustered_catalog(clusters=40, seed=5)
    weights = SimilarityWeights(candidate_budget=150)  # far below the catalog size
    index = SimilarityIndex.build(catalog, weights)
    queries = [p.id for p in catalog if p.available][::7]
    overlap = [
        len(set(ids(index.similar(q))) & set(ids(index.similar_exhaustive(q)))) / 8 for q in queries
    ]
    assert statistics.fmean(overlap) >= 0.9


# --- invariants on arbitrary catalogs ------------------------------------------------------------

products_strategy = st.lists(
    st.builds(
        product,
        id=st.text("abcdef", min_size=1, max_size=3),
        title=st.text("abc xyz", max_size=12),
        price=st.floats(0, 1000),
        brand=st.sampled_from(["", "K", "S"]),
        product_type=st.sampled_from(["", "A", "A > B", "A > C", "D > B"]),
        item_group_id=st.sampled_from(["", "g1", "g2"]),
        availability=st.sampled_from(["in_stock", "out_of_stock", "preorder"]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(products_strategy, st.data())
def test_invariants_hold_for_any_catalog(products: list[Product], data: st.DataObject) -> None:
    index = SimilarityIndex.build(products)
    if not len(index):
        return
    anchor = data.draw(st.sampled_from(sorted({p.id for p in products})))
    exclude = data.draw(st.frozensets(st.sampled_from(sorted({p.id for p in products}))))
    found = index.similar(anchor, k=5, exclude=exclude, behaviour={anchor: 1.0})
    anchor_group = index.get(anchor).item_group_id  # type: ignore[union-attr]
    groups = [r.product.item_group_id for r in found if r.product.item_group_id]
    assert len(found) <= 5
    assert all(r.product.available and r.product.id not in exclude | {anchor} for r in found)
    assert len(groups) == len(set(groups)) and (not anchor_group or anchor_group not in groups)
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert msgspec.json.encode(found) == msgspec.json.encode(index.similar_exhaustive(
        anchor, k=5, exclude=exclude, behaviour={anchor: 1.0}
    )) or len(products) > 20  # fmt: skip
