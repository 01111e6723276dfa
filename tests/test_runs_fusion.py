"""TREC run files and parquet candidate sets round-trip; fusion follows its formula."""

from __future__ import annotations

import polars as pl
import pytest

from rankwise.core.io import DatasetError
from rankwise.eval.runs import read_candidates, read_trec_run, write_candidates, write_trec_run
from rankwise.rankers.fusion import fuse


def _cands(rows):
    return pl.DataFrame(rows, schema={"qid": pl.String, "docid": pl.String, "score": pl.Float64, "rank": pl.Int64}, orient="row")


def test_trec_run_round_trip_reranks_by_score(tmp_path):
    cands = _cands([("q1", "a", 0.1, 1), ("q1", "b", 0.9, 2), ("q2", "c", 1.0, 1)])
    path = write_trec_run(cands, tmp_path / "run.trec")
    assert path.read_text().splitlines()[0] == "q1 Q0 b 1 0.900000 rankwise"
    back = read_trec_run(path)
    assert back.filter(pl.col("qid") == "q1")["docid"].to_list() == ["b", "a"]
    assert not list(tmp_path.glob("*.tmp"))
    write_candidates(cands, tmp_path / "c.parquet")
    assert read_candidates(tmp_path / "c.parquet").sort("qid", "rank")["docid"].to_list() == ["b", "a", "c"]


def test_read_trec_run_malformed_line_is_named(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b two 0.4 t\n")
    with pytest.raises(DatasetError, match=r"bad.trec:2: rank or score is not a number"):
        read_trec_run(bad)
    (tmp_path / "short.trec").write_text("q1 a 1\n")
    with pytest.raises(DatasetError, match=r"short.trec:1: expected"):
        read_trec_run(tmp_path / "short.trec")


def test_zscore_fusion_matches_formula():
    first = _cands([("q", "a", 3.0, 1), ("q", "b", 2.0, 2), ("q", "c", 1.0, 3)])
    rer = _cands([("q", "a", 0.0, 3), ("q", "b", 0.5, 2), ("q", "c", 1.0, 1)])
    z = [1.224744871, 0.0, -1.224744871]
    fused = fuse(first, rer, 0.3).sort("docid")
    assert fused["score"].to_list() == pytest.approx([0.3 * z[0] + 0.7 * z[2], 0.0, 0.3 * z[2] + 0.7 * z[0]])
    assert fuse(first, rer, 1.0)["docid"].to_list() == ["a", "b", "c"]
    assert fuse(first, rer, 0.0)["docid"].to_list() == ["c", "b", "a"]


def test_rrf_fusion_and_weight_check():
    first = _cands([("q", "a", 3.0, 1), ("q", "b", 2.0, 2)])
    rer = _cands([("q", "a", 0.0, 2), ("q", "b", 1.0, 1)])
    fused = fuse(first, rer, 0.5, "rrf", rrf_k=60).sort("docid")
    assert fused["score"].to_list() == pytest.approx([0.5 / 61 + 0.5 / 62] * 2)
    with pytest.raises(ValueError, match="weight must be in"):
        fuse(first, rer, 1.5)


def test_fuse_many_generalises_fuse_and_fit_finds_the_informative_run():
    import polars as pl

    from rankwise.eval.fusion_fit import fit_fusion_weights, simplex_grid
    from rankwise.rankers.fusion import fuse, fuse_many

    rows = [(f"q{q}", f"d{d}") for q in range(6) for d in range(5)]
    base = pl.DataFrame({"qid": [q for q, _ in rows], "docid": [d for _, d in rows],
                         "score": [float(5 - int(d[1:])) for _, d in rows]}).with_columns(pl.lit(0).alias("rank"))
    oracle = base.with_columns(pl.when(pl.col("docid") == "d3").then(10.0).otherwise(pl.col("score") * 0.1).alias("score"))
    noise = base.with_columns((pl.col("score") * -1.0).alias("score"))
    two = fuse(base, oracle, 0.3)
    many = fuse_many([base, oracle], [0.3, 0.7])
    assert two.sort("qid", "rank").equals(many.sort("qid", "rank"))
    assert len(simplex_grid(3, 0.25)) == 15 and all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(3, 0.25))
    qrels = {f"q{q}": {"d3": 1} for q in range(6)}
    weights, value = fit_fusion_weights([base, noise, oracle], qrels, step=0.25)
    assert value == 1.0 and weights[2] > weights[1]


def test_fusion_sweep_scores_every_point_as_fuse_many_ranks_it():
    import numpy as np
    import polars as pl

    from rankwise.eval.fusion_fit import fusion_sweep, simplex_grid
    from rankwise.eval.metrics import evaluate
    from rankwise.rankers.fusion import fuse_many

    rng = np.random.default_rng(0)
    pairs = [(f"q{q}", f"d{d}") for q in range(12) for d in range(15)]
    def run(keep: float) -> pl.DataFrame:
        rows = [p for p in pairs if rng.random() < keep]
        return pl.DataFrame({"qid": [q for q, _ in rows], "docid": [d for _, d in rows],
                             "score": rng.normal(size=len(rows)).round(1)}).with_columns(pl.lit(0).alias("rank"))
    runs = [run(1.0), run(1.0), run(0.7)]  # the third scored only some pairs; .round(1) makes ties
    qrels = {f"q{q}": {f"d{d}": int(rng.integers(0, 3)) for d in rng.choice(15, 4, replace=False)} for q in range(10)}
    for method in ("zscore", "rrf"):
        sweep = fusion_sweep(runs, qrels, step=0.125, metric="ndcg@10", method=method)
        assert [w for w, _ in sweep] == [tuple(round(x, 6) for x in w) for w in simplex_grid(3, 0.125)]
        for weights, value in sweep:
            assert value == evaluate(qrels, fuse_many(runs, weights, method), ["ndcg@10"])["ndcg@10"], (method, weights)


def test_merge_results_keeps_other_writers_rows(tmp_path):
    import json

    from rankwise.eval.report import merge_results

    key = lambda r: (r["model"], r["seed"])  # noqa: E731
    merge_results("bench", [{"model": "a", "seed": 1, "ndcg@10": 0.1}], key, "p", results_dir=tmp_path)
    merge_results("bench", [{"model": "b", "seed": 1, "ndcg@10": 0.2}], key, "p", results_dir=tmp_path)  # another writer
    rows = merge_results("bench", [{"model": "a", "seed": 1, "ndcg@10": 0.3}], key, "p", results_dir=tmp_path,
                         sort=lambda r: r["model"])
    assert [(r["model"], r["ndcg@10"]) for r in rows] == [("a", 0.3), ("b", 0.2)]
    assert json.loads((tmp_path / "bench.json").read_text())["rows"] == rows
