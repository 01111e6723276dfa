"""benchmarks/llm_rankers_scifact.py keeps the config of every run whose rows its results file holds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "llm_rankers_scifact.py"


def test_each_backbone_run_keeps_its_config_beside_the_earlier_ones(tmp_path):
    spec = importlib.util.spec_from_file_location("llm_rankers_bench", PATH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(bench)
        path = tmp_path / "llm_rankers_scifact.json"
        path.write_text(json.dumps({"config": "old run", "rows": []}))
        first = bench.run_configs(path, bench.BenchConfig(backbone="qwen", dtype="bf16"))
        path.write_text(json.dumps({"configs": first, "rows": []}))
        both = bench.run_configs(path, bench.BenchConfig(backbone="smol", dtype="fp32"))
    finally:
        sys.modules.pop(spec.name, None)
    assert set(both) == {"earlier", "qwen bf16", "smol fp32"}
    assert both["earlier"] == "old run" and "'backbone': 'smol'" in both["smol fp32"]
