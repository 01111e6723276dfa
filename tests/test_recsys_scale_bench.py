"""benchmarks/recsys_scale.py at toy size: synthetic data, the rows of one run, resume, growth-curve fit, plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._bench import bench_module

@pytest.fixture(scope="module")
def bench():
    with bench_module("recsys_scale") as module:
        yield module

def test_synthetic_catalog_is_seeded_zipf_with_histories_in_range(bench):
    data = bench.synthetic_catalog(300, 50, seed=3)
    again = bench.synthetic_catalog(300, 50, seed=3)
    lengths = [len(s) for s in data.sequences]
    assert data.n_items == 300 and len(data.user_ids) == 50
    assert bench.HISTORY[0] <= min(lengths) and max(lengths) <= bench.HISTORY[1]
    flat = np.concatenate(data.sequences)
    assert flat.min() >= 1 and flat.max() <= 300
    assert all(np.array_equal(a, b) for a, b in zip(data.sequences, again.sequences))
    counts = np.sort(np.bincount(flat, minlength=301)[1:])[::-1]
    assert counts[0] > 5 * counts[150]  # popularity falls with rank (r^-0.8: about 55x here)

def test_default_eval_chunk_is_the_slice_the_library_picks_by_itself(bench):
    from rankwise.recsys.evaluate import DENSE_SCORES

    assert bench.ScaleConfig().eval_chunk == DENSE_SCORES // bench.EVAL_BATCH

def test_run_writes_one_row_per_model_and_skips_them_on_a_rerun(bench, tmp_path, monkeypatch):
    cfg = bench.ScaleConfig(items=(500,), users=200, steps=3, warmup=1, batch_size=32, eval_users=40, requests=10,
                            threads=1, results_dir=tmp_path)
    rows = bench.run(cfg)
    assert sorted(r["model"] for r in rows) == ["hstu", "sasrec"]  # one size: nothing to extrapolate
    doc = json.loads((tmp_path / "recsys_scale.json").read_text())
    assert doc["benchmark"] == "recsys_scale" and doc["rows"] == rows and "machine" in doc
    for r in rows:
        assert (r["items"], r["users"], r["device"], r["extrapolated"], r["steps"]) == (500, 200, "cpu", False, 3)
        assert r["hardware"] and r["interactions"] >= 200 * bench.HISTORY[0]
        assert r["train_step_ms"] > 0 and r["epoch_s_linear"] > 0 and r["positions_per_step"] > 0
        assert r["sampled_path"] == "score-matrix"  # 500 items: the positions x items product is small
        assert r["train_peak_rss_mb"] >= r["train_base_rss_mb"] > 0 and r["rss_peak_reset"] is True
        assert r["eval_users"] == 40 and r["eval_s"] > 0 and r["eval_chunk"] == 262_144
        assert r["eval_all_users_s_linear"] == pytest.approx(r["eval_s"] * 200 / 40, abs=0.1)
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["many_users_per_s"] > 0 and r["serve_peak_rss_mb"] > 0

    def no_rerun(*args):  # noqa: ANN002, ANN202
        raise AssertionError("a row already in the result file was measured again")

    monkeypatch.setattr(bench, "_measure_isolated", no_rerun)
    assert bench.run(cfg) == rows

def test_fit_affine_recovers_a_line_and_keeps_both_terms_non_negative(bench):
    x = np.array([1e4, 1e5, 1e6])
    a, b = bench.fit_affine(x, 7.0 + 3e-4 * x)
    assert a == pytest.approx(7.0) and b == pytest.approx(3e-4)
    assert bench.fit_affine(x, np.array([5.0, 4.0, 3.0]))[1] == 0.0  # falling values: no negative slope

def _row(model: str, items: int, path: str, chunk: int, step_ms: float) -> dict:
    return {"model": model, "items": items, "users": 100, "device": "cpu", "extrapolated": False, "hardware": "cpu",
            "seed": 0, "sampled_path": path, "eval_chunk": chunk, "train_step_ms": step_ms,
            "train_peak_rss_mb": 500 + items / 1000, "eval_all_users_s_linear": items / 1e4, "eval_peak_rss_mb": 600.0,
            "p50_ms": 1 + items / 1e6, "p99_ms": 2 + items / 1e6, "many_ms_per_user": 0.1 + items / 1e7,
            "serve_peak_rss_mb": 400 + items / 1e4}

def test_extrapolated_rows_fit_only_the_sizes_on_the_10m_code_path(bench, tmp_path):
    rows = [_row("sasrec", 10_000, "score-matrix", 262_144, 900.0),  # the score-matrix path: left out of the train fit
            _row("sasrec", 100_000, "gather", 262_144, 1000.0), _row("sasrec", 1_000_000, "gather", 262_144, 1100.0)]
    (row,) = bench.extrapolated_rows(rows)
    assert row["extrapolated"] is True and row["items"] == bench.EXTRAPOLATE_TO
    assert row["train_fit_items"] == "100000/1000000" and row["serve_fit_items"] == "10000/100000/1000000"
    assert row["train_step_ms"] == pytest.approx(1000 + 100 * (1e7 - 1e5) / 9e5)  # the line through 100k and 1M
    assert row["eval_all_users_s_linear"] == pytest.approx(1000.0) and row["p50_ms"] == pytest.approx(11.0)
    assert row["many_users_per_s"] == pytest.approx(1000 / 1.1, rel=1e-3) and 0 < row["p50_ms_loglog_exp"] < 1
    assert "not_extrapolated" not in row
    dense = [dict(r, sampled_path="score-matrix", eval_chunk=0) for r in rows]
    (partial,) = bench.extrapolated_rows(dense)
    assert "train_step_ms" not in partial and "eval_peak_rss_mb" not in partial and "p50_ms" in partial
    assert "train_step_ms" in partial["not_extrapolated"] and "eval_all_users_s_linear" in partial["not_extrapolated"]
    assert bench.plot_scale(rows + [row], tmp_path / "scale.png").stat().st_size > 0
