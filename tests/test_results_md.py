"""docs/results.md and the README's results block are current with benchmarks/results/*.json."""

from __future__ import annotations

from pathlib import Path

from rankwise.eval.results_md import update

ROOT = Path(__file__).resolve().parents[1]


def test_rendered_results_are_current():
    stale = update(ROOT, check=True)
    assert stale == [], f"run: python -m rankwise.eval.results_md (stale: {[str(p) for p in stale]})"


def test_summary_quotes_the_paired_comparison_and_the_run_chosen_on_dev(tmp_path):
    import json

    from rankwise.eval.results_md import render_summary

    base = {"dataset": "scifact", "curriculum": "none", "subset": "all", "queries": 300}
    rows = [
        {**base, "model": "bi-encoder", "objective": "untrained", "fusion": "zscore", "ndcg@10": 0.70},
        {**base, "model": "cross-encoder", "objective": "listnet", "fusion": "zscore+bi-encoder", "ndcg@10": 0.76, "seed": 0,
         "vs_untrained_fusion_delta": 0.06, "vs_untrained_fusion_ci95_low": 0.02, "vs_untrained_fusion_ci95_high": 0.1,
         "vs_untrained_fusion_p_value": 0.0004, "dev_ndcg@10_fused": 0.70},
        {**base, "model": "cross-encoder", "objective": "pointwise", "fusion": "zscore+bi-encoder", "ndcg@10": 0.74, "seed": 0,
         "dev_ndcg@10_fused": 0.78},
    ]
    (tmp_path / "objectives_scifact_cross_encoder.json").write_text(json.dumps({"rows": rows}))
    text = render_summary(tmp_path)
    assert "0.7600 (paired Δ vs the default +0.0600, 95% CI [+0.0200, +0.1000], p < 0.001)" in text
    chosen = next(line for line in text.splitlines() if "chosen on held-out train queries" in line)
    assert "— pointwise" in chosen and "| 0.7400" in chosen  # the best dev fusion, not the best test row


def test_results_table_names_the_backbone_and_keeps_every_failure_rate(tmp_path):
    """Two LLM backbones with the same model and setting are told apart, and a table with many id
    columns still shows its rates (the listwise echo rate is what says an LLM ranker did nothing)."""
    import json

    from rankwise.eval.results_md import render_results

    base = {"model": "listwise-zero-shot", "setting": "window 10 stride 5", "queries": 100, "ndcg@10": 0.63, "mrr@10": 0.6,
            "mean_digit_mass": None, "fit_ndcg@10_fused": 0.8, "parse_failure_rate": 0.0, "echo_rate": 0.99, "partial_rate": 0.01}
    rows = [{**base, "backbone": "smollm2", "dtype": "fp32", "fusion": "none", "hardware": "cpu"},
            {**base, "backbone": "qwen", "dtype": "bf16", "fusion": "zscore", "hardware": "gpu"}]
    (tmp_path / "llm_rankers_scifact.json").write_text(json.dumps({"rows": rows}))
    header = next(line for line in render_results(tmp_path).splitlines() if line.startswith("| model"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:3] == ["model", "backbone", "dtype"]
    assert {"parse_failure_rate", "echo_rate", "partial_rate"} <= set(columns)


def test_small_values_keep_their_significant_digits():
    from rankwise.eval.results_md import _fmt

    assert (_fmt(5e-05), _fmt(2e-05), _fmt(0.0), _fmt(0.71234), _fmt(12345.6)) == ("5e-05", "2e-05", "0.0000", "0.7123", "12346")
