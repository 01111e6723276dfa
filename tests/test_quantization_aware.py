"""Quantisation-aware training: the int8 simulation's arithmetic, its fidelity to onnxruntime's int8
export, its clean removal, and int8-aware distillation through the trainer and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rankwise.eval.datasets.beir import load_beir
from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.core.device import cpu_has_vnni
from rankwise.serving.export import export_model
from rankwise.serving.onnx_ranker import OnnxRanker
from tests._serving_models import tiny_cross_encoder_dir
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig
from rankwise.train.data import TrainingList, collate_lists
from rankwise.train.quantization_aware import fake_quant_activation, fake_quant_weight, simulate_onnx_int8


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    return tiny_cross_encoder_dir(tmp_path_factory.mktemp("qat") / "model", initializer_range=0.2)


@pytest.fixture(scope="module")
def lists(data_dir) -> list[TrainingList]:
    """Real SciFact train queries, each with its first positive and 5 random documents (cut to 400 chars)."""
    ds = load_beir(data_dir / "beir" / "scifact", "train", download=False)
    rng, docids = random.Random(0), sorted(ds.corpus)
    out = []
    for qid in sorted(ds.qrels)[:8]:
        ids = sorted(ds.qrels[qid])[:1] + rng.sample(docids, 5)
        out.append(TrainingList(qid, ds.queries[qid], tuple(ids), tuple(ds.doc_text(d)[:400] for d in ids),
                                (1.0,) + (0.0,) * 5, tuple(range(1, 7)), (0.0,) * 6))
    return out


def test_fake_quant_weight_rounds_each_row_to_its_int8_grid_with_identity_gradient():
    torch.manual_seed(0)
    w = (torch.randn(8, 16) * torch.linspace(0.01, 3.0, 8)[:, None]).requires_grad_()
    q = fake_quant_weight(w)
    scale = w.detach().abs().amax(dim=1, keepdim=True) / 127  # (8, 1)
    steps = q.detach() / scale
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127 + 1e-3
    assert ((q.detach() - w.detach()).abs() <= scale / 2 + 1e-6).all()
    assert (q.detach().abs().amax(dim=1) - w.detach().abs().amax(dim=1)).abs().max() < 1e-6  # the extremes are exact
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    seven_bit = fake_quant_weight(w.detach(), levels=64)  # onnxruntime's reduce_range: [-64, 64]
    steps = seven_bit / (w.detach().abs().amax(dim=1, keepdim=True) / 64)
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 64 + 1e-3


def test_cpu_has_vnni_reads_the_flags_and_the_export_default_follows_it(monkeypatch):
    from rankwise.core import device
    from rankwise.serving.quantize import dynamic_int8_reduce_range

    line = "flags\t\t: fpu sse2 avx2 fma"
    assert not cpu_has_vnni(f"processor\t: 0\n{line}\n")
    assert cpu_has_vnni(f"{line} avx512f avx512_vnni\n") and cpu_has_vnni(f"{line} avx_vnni\n")
    assert cpu_has_vnni("processor\t: 0\n")  # no flags line: assume the kernel does not saturate
    monkeypatch.setattr(device, "cpu_has_vnni", lambda: False)
    assert dynamic_int8_reduce_range() is True
    monkeypatch.setattr(device, "cpu_has_vnni", lambda: True)
    assert dynamic_int8_reduce_range() is False


def test_fake_quant_activation_uses_the_tensor_range_keeps_zero_exact_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(3, 200) * 4, torch.zeros(3, 1)], dim=1).requires_grad_()
    q = fake_quant_activation(x)
    scale = float((x.detach().max() - x.detach().min()) / 255)
    assert ((q.detach() - x.detach()).abs() <= scale / 2 + 1e-5).all()
    assert torch.all(q.detach()[:, -1] == 0)  # zero is a grid point (padding stays exactly zero)
    assert len(torch.unique(q.detach())) <= 256 < len(torch.unique(x.detach()))
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    positive = torch.rand(4, 4) + 1.0  # an all-positive tensor's range starts at 0
    assert ((fake_quant_activation(positive) - positive).abs() <= 2.0 / 255 / 2 + 1e-6).all()


# Full-range int8 weights saturate onnxruntime's int16 pair sums on an x86-64 CPU without VNNI
# (there the full-range export's scores are further from this simulation than fp32's), so only the
# 7-bit export is checked on such a CPU; it is the export's default there.
RANGES = [True] if not cpu_has_vnni() else [False, True]


@pytest.mark.parametrize("reduce_range", RANGES)
def test_simulation_tracks_onnxruntime_int8_and_is_undone_on_exit(ce_dir, lists, tmp_path, reduce_range):
    """The simulated int8 scores sit much closer to the int8 ONNX export's than fp32 scores do."""
    int8_dir = tmp_path / "int8"
    export_model(ce_dir, int8_dir, quantize="int8", int8_reduce_range=reduce_range)
    levels = 64 if reduce_range else 127
    assert json.loads((int8_dir / "serving.json").read_text())["int8_weight_range"] == [-levels, levels]
    ce = CrossEncoder.from_pretrained(ce_dir)
    ce.model.eval()
    onnx_int8 = OnnxRanker(int8_dir, device="cpu", batch_size=64)
    gaps_fp32, gaps_sim = [], []
    for t in lists:
        ort = onnx_int8.score(t.query, list(t.docs))  # one batch per list, as simulated below
        with torch.inference_mode():
            fp32 = ce.logits([t.query] * len(t.docs), list(t.docs)).numpy()
            with simulate_onnx_int8(ce.model, reduce_range=reduce_range) as names:
                sim = ce.logits([t.query] * len(t.docs), list(t.docs)).numpy()
        gaps_fp32.append(np.abs(fp32 - ort).mean())
        gaps_sim.append(np.abs(sim - ort).mean())
    assert len(names) == 2 * 6  # q, k, v, attention output, FFN in, FFN out per layer
    assert np.mean(gaps_fp32) > 1e-4  # int8 does move the scores
    assert np.mean(gaps_sim) < 0.5 * np.mean(gaps_fp32)
    with torch.inference_mode():  # the context restored the plain fp32 forward
        again = ce.logits([lists[0].query] * 6, list(lists[0].docs)).numpy()
    np.testing.assert_allclose(again, ce.score(lists[0].query, list(lists[0].docs)), atol=1e-6)
    assert all("forward" not in vars(m) for m in ce.model.modules())


def test_int8_aware_distillation_closes_the_gap_to_the_fp32_teacher(ce_dir, lists, tmp_path):
    student, teacher = CrossEncoder.from_pretrained(ce_dir), CrossEncoder.from_pretrained(ce_dir)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective="distill-mse", int8_aware=True, max_steps=48,
                                    lists_per_step=8, learning_rate=1e-5, warmup_ratio=0.0, progress=False, log_every=1)
    trainer = CrossEncoderTrainer(student, lists * 48, cfg, teacher=teacher)  # 24 steps: 0.56x on an AMD EPYC (CPU numerics)
    batch = collate_lists(lists)

    def simulated_gap() -> float:
        with torch.inference_mode(), simulate_onnx_int8(student.model):
            return float(trainer.compute_loss(batch))

    before = simulated_gap()
    trainer.train()
    after = simulated_gap()
    assert before > 0 and after < 0.5 * before, (before, after)
    # the teacher never moved, and the student's fp32 weights (not rounded in place) were saved
    np.testing.assert_allclose(teacher.score(lists[0].query, list(lists[0].docs)),
                               CrossEncoder.from_pretrained(ce_dir).score(lists[0].query, list(lists[0].docs)), atol=1e-6)
    meta = json.loads((tmp_path / "out" / "rankwise.json").read_text())["training"]
    assert meta["objective"] == "distill-mse" and meta["int8_aware"] is True and meta["teacher"] == str(ce_dir)
    assert meta["int8_weight_range"] == ([-127, 127] if cpu_has_vnni() else [-64, 64])
    saved = CrossEncoder.from_pretrained(tmp_path / "out")
    np.testing.assert_allclose(saved.score(lists[0].query, list(lists[0].docs)),
                               student.score(lists[0].query, list(lists[0].docs)), atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--objective", "distill-mse"], "--objective distill-mse and --teacher go together"),
    (["--objective", "lipo", "--teacher", "."], "--objective distill-mse and --teacher go together"),
    (["--objective", "distill-mse", "--teacher", "no-such-dir"], "--teacher no-such-dir: not a rankwise model directory"),
    (["--int8-aware", "--architecture", "bi-encoder"], "--int8-aware: only the cross-encoder"),
])
def test_cli_rejects_inconsistent_distillation_options(tmp_path, args, message):
    from rankwise.cli import app

    result = CliRunner().invoke(app, ["train", "cross-encoder", "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.output, result.output
