"""benchmarks/llm_rankers_scifact.py keeps the config of every run whose rows its results file holds."""

from __future__ import annotations

import json

from tests._bench import bench_module


def test_each_backbone_run_keeps_its_config_beside_the_earlier_ones(tmp_path):
    with bench_module("llm_rankers_scifact") as bench:
        path = tmp_path / "llm_rankers_scifact.json"
        path.write_text(json.dumps({"config": "old run", "rows": []}))
        first = bench.run_configs(path, bench.BenchConfig(backbone="qwen", dtype="bf16"))
        path.write_text(json.dumps({"configs": first, "rows": []}))
        both = bench.run_configs(path, bench.BenchConfig(backbone="smol", dtype="fp32"))
    assert set(both) == {"earlier", "qwen bf16", "smol fp32"}
    assert both["earlier"] == "old run" and "'backbone': 'smol'" in both["smol fp32"]
