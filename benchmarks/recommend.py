"""Benchmark of similar-product recommendations (``widget_server.catalog.recommend``).

Builds a synthetic catalog made of clusters (products of one cluster share a category leaf, a
brand, model words and a price band; five clusters share each leaf and two share each brand, so
no single attribute identifies a cluster), then measures:

* the time to build the :class:`SimilarityIndex`;
* top-8 latency of ``similar`` (p50/p95/p99, wall clock) over many requests, its CPU time per
  request, and the latency of ``similar_for_session`` (three viewed products);
* precision@8: the share of the top 8 that belong to the query product's cluster;
* the same for a brute-force baseline that scores every product, on fewer requests, with the
  speedup ratio and the overlap (recall@8) of the index's top 8 with the brute-force top 8.

Run ``.venv/bin/python benchmarks/recommend.py`` (``--quick`` for a smoke test). One JSON object
goes to stdout, progress to stderr. Latencies are wall-clock times on one core, so other load on
the machine shows in the tail: the report carries the load average before and after the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from widget_server.catalog.feeds import Product
from widget_server.catalog.recommend import ScoredProduct, SimilarityIndex

TARGET_P99_MS = 5.0
COLOURS = ("Black", "Navy", "Olive", "Sand", "Stone Grey", "Burgundy", "Coral", "Off-White")
ADJECTIVES = ("Classic", "Pro", "Lite", "Everyday", "Premium", "Essential", "Sport", "Travel")
_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def word(rng: random.Random) -> str:
    syllables = ("ka", "lo", "mi", "ren", "tor", "vi", "sa", "nu", "dre", "pel", "zo", "qua")
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))


def synthetic_catalog(clusters: int, per_cluster: int = 20, seed: int = 1) -> list[Product]:
    """``clusters`` x ``per_cluster`` products; the cluster number is the id's prefix.

    A cluster shares a category leaf (with four other clusters), a brand (with another cluster),
    three model words (which other clusters may reuse) and a price band, but noisily: a quarter
    of the products lack the brand, a fifth have no model word in the title, some are filed in a
    neighbouring leaf, prices spread +-35%, and a quarter are colour variants of the previous one.
    """
    rng = random.Random(seed)
    leaves = max(1, clusters // 5)
    brands = [word(rng).title() for _ in range(max(1, clusters // 2))]
    products: list[Product] = []
    for cluster in range(clusters):
        brand = brands[(cluster * 7919) % len(brands)]
        models = [word(rng) for _ in range(3)]
        base = math.exp(rng.uniform(math.log(5), math.log(500)))
        for j in range(per_cluster):
            if j and rng.random() < 0.25:
                products.append(_variant(rng, products[-1]))
                continue
            leaf = cluster % leaves if rng.random() > 0.15 else (cluster + 1) % leaves
            picked = rng.sample(models, rng.choice((0, 1, 1, 2, 2)))
            title = " ".join([brand, *picked, rng.choice(ADJECTIVES), "-", rng.choice(COLOURS)])
            products.append(
                Product(
                    id=f"c{cluster:05d}-{j:02d}-{rng.randrange(10**6):06d}",
                    title=title,
                    price=round(base * rng.uniform(0.65, 1.35), 2),
                    currency="EUR",
                    availability="out_of_stock" if rng.random() < 0.05 else "in_stock",
                    brand="" if rng.random() < 0.25 else brand,
                    product_type=f"Dept {leaf % 10} > Aisle {leaf % 100} > Shelf {leaf}",
                    item_group_id=f"g{cluster}-{j}",
                )
            )
    return products


def _variant(rng: random.Random, previous: Product) -> Product:
    """Another colour of ``previous``: same item group, title stem and price."""
    stem = previous.title.rpartition(" - ")[0]
    cluster, _, rest = previous.id.partition("-")
    return msgspec.structs.replace(
        previous,
        id=f"{cluster}-{rest[:2]}v-{rng.randrange(10**6):06d}",
        title=f"{stem} - {rng.choice(COLOURS)}",
        availability="out_of_stock" if rng.random() < 0.05 else "in_stock",
    )


def cluster_of(product_id: str) -> str:
    return product_id.partition("-")[0]


def precision(query: str, results: Sequence[ScoredProduct]) -> float:
    if not results:
        return 0.0
    return sum(cluster_of(r.product.id) == cluster_of(query) for r in results) / len(results)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 3)}


def timed(
    queries: Sequence[str], call: Callable[[str], list[ScoredProduct]]
) -> tuple[list[float], dict[str, list[ScoredProduct]]]:
    samples: list[float] = []
    results: dict[str, list[ScoredProduct]] = {}
    for query in queries:
        start = time.perf_counter_ns()
        results[query] = call(query)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples, results


def run(clusters: int, requests: int, brute_requests: int, seed: int) -> dict[str, object]:
    progress(f"generating {clusters * 20} products")
    catalog = synthetic_catalog(clusters, seed=seed)
    start = time.perf_counter()
    index = SimilarityIndex.build(catalog)
    build_s = time.perf_counter() - start
    progress(f"index built in {build_s:.2f} s")
    rng = random.Random(seed + 1)
    in_stock = [p.id for p in catalog if p.available]
    queries = [rng.choice(in_stock) for _ in range(requests)]
    index.similar(queries[0])  # warm up
    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    fast_ms, fast = timed(queries, lambda q: index.similar(q, k=8))
    cpu_ms = (time.process_time() - cpu_start) * 1000 / len(queries)
    progress(f"{requests} top-8 requests: p99 {percentiles(fast_ms)['p99']} ms")
    sessions = [[rng.choice(in_stock) for _ in range(3)] for _ in range(min(requests, 1000))]
    session_ms, _ = timed(
        [str(i) for i in range(len(sessions))],
        lambda i: index.similar_for_session(sessions[int(i)], k=8),
    )
    brute_queries = queries[:brute_requests]
    brute_ms, brute = timed(brute_queries, lambda q: index.similar_exhaustive(q, k=8))
    progress(f"{brute_requests} brute-force requests: p50 {percentiles(brute_ms)['p50']} ms")
    recall = [
        len({r.product.id for r in fast[q]} & {r.product.id for r in brute[q]})
        / max(len(brute[q]), 1)
        for q in brute_queries
    ]
    fast_p = percentiles(fast_ms)
    brute_p = percentiles(brute_ms)
    return {
        "catalog_size": len(catalog),
        "clusters": clusters,
        "build_s": round(build_s, 3),
        "requests": requests,
        "latency_ms": fast_p,
        "cpu_ms_per_request": round(cpu_ms, 3),
        "session_latency_ms": percentiles(session_ms),
        "precision_at_8": round(statistics.fmean(precision(q, fast[q]) for q in queries), 4),
        "brute_force": {
            "requests": brute_requests,
            "latency_ms": brute_p,
            "precision_at_8": round(
                statistics.fmean(precision(q, brute[q]) for q in brute_queries), 4
            ),
        },
        "speedup_p50": round(brute_p["p50"] / fast_p["p50"], 1),
        "speedup_mean": round(statistics.fmean(brute_ms) / statistics.fmean(fast_ms), 1),
        "recall_at_8_vs_brute_force": round(statistics.fmean(recall), 4),
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": fast_p["p99"] <= TARGET_P99_MS,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        report = run(clusters=100, requests=300, brute_requests=50, seed=args.seed)
    else:
        report = run(clusters=5000, requests=3000, brute_requests=300, seed=args.seed)
    report["mode"] = "quick" if args.quick else "full"
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
