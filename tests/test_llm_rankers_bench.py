"""benchmarks/llm_rankers_scifact.py keeps the config of every run whose rows its results file holds."""

from __future__ import annotations

import json

from tests._bench import bench_module


def test_each_backbone_and_teacher_run_keeps_its_config_beside_the_earlier_ones(tmp_path):
    with bench_module("llm_rankers_scifact") as bench:
        path = tmp_path / "llm_rankers_scifact.json"
        path.write_text(json.dumps({"config": "old run", "rows": []}))
        first = bench.run_configs(path, bench.BenchConfig(backbone="qwen", dtype="bf16"))
        path.write_text(json.dumps({"configs": first, "rows": []}))
        both = bench.run_configs(path, bench.BenchConfig(backbone="smol", dtype="fp32"))
        path.write_text(json.dumps({"configs": both, "rows": []}))
        taught = bench.run_configs(path, bench.BenchConfig(backbone="smol", dtype="fp32", sft_teacher="bi-encoder"))
        path.write_text(json.dumps({"configs": taught, "rows": []}))
        platt = bench.run_configs(path, bench.BenchConfig(backbone="smol", dtype="fp32", sft_teacher="bi-encoder",
                                                          sft_teacher_scale="platt"))
    assert set(both) == {"earlier", "qwen bf16", "smol fp32"}
    assert both["earlier"] == "old run" and "'backbone': 'smol'" in both["smol fp32"]
    assert set(taught) == {"earlier", "qwen bf16", "smol fp32", "smol fp32 teacher bi-encoder"}  # the {0, 10} run's config stays
    assert "'sft_teacher': ''" in taught["smol fp32"] and "'sft_teacher': 'bi-encoder'" in taught["smol fp32 teacher bi-encoder"]
    assert set(platt) - set(taught) == {"smol fp32 teacher bi-encoder (platt scale)"}  # a second scale is another run


def test_erank_grpo_row_trains_sft_then_grpo_and_keeps_both_rows(tmp_path, monkeypatch, data_dir):
    """``--rankers erank-sft,erank-grpo`` on a tiny random LM: one SFT feeds both rows; GRPO runs
    through the library recipe (``train_erank(stage="grpo")``) from the saved SFT checkpoint."""
    import contextlib

    from _tiny_llm import one_thread, tiny

    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    model, tok = tiny(seed=3)
    model.save_pretrained(tmp_path / "backbone")
    tok.save_pretrained(tmp_path / "backbone")
    with contextlib.contextmanager(one_thread)(), bench_module("llm_rankers_scifact") as bench:
        config = bench.BenchConfig(
            queries=2, fit_queries=2, depth=3, passage_tokens=16, rankers="erank-sft,erank-grpo", device="cpu",
            backbone=str(tmp_path / "backbone"), sft_queries=2, sft_list_size=2, sft_steps=1, sft_batch=2,
            grpo_steps=1, grpo_queries=2, grpo_list_size=2, grpo_generations=2, results_dir=str(tmp_path / "results"))
        rows = bench.run(config)
    grpo = [r for r in rows if r["model"] == "erank-grpo"]
    assert [r["fusion"] for r in grpo] == ["none", "zscore"]
    assert grpo[0]["setting"] == "integer 0-10, 1 SFT steps, then 1 GRPO steps" and grpo[0]["queries"] == 2
    assert grpo[0]["grpo_train_s"] > 0 and 0.0 <= grpo[0]["ndcg@10"] <= 1.0
    assert any(r["model"] == "erank-sft" for r in rows)
    assert (tmp_path / "cache" / "bench-erank" / "sft" / "rankwise.json").is_file()
    saved = json.loads((tmp_path / "results" / "llm_rankers_scifact.json").read_text())
    assert {r["model"] for r in saved["rows"]} >= {"bm25", "random", "erank-sft", "erank-grpo"}
