"""ml-100k end to end through the CLI: train one short epoch, evaluate, predict with titles."""

import json

import pytest

from typer.testing import CliRunner

from rankwise.cli import app

runner = CliRunner()


def test_recommend_train_eval_predict_on_ml100k(tmp_path):
    out = tmp_path / "sasrec"
    res = runner.invoke(app, ["recommend", "train", "--model", "sasrec", "--dataset", "ml-100k", "--output", str(out),
                              "--epochs", "1", "--max-len", "20", "--hidden", "16", "--json"])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    assert trained["users"] == 943 and 0.0 <= trained["ndcg@10"] <= trained["hr@10"] <= 1.0
    assert (out / "model.safetensors").is_file() and json.loads((out / "rankwise.json").read_text())["kind"] == "sasrec"

    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--json"])
    assert res.exit_code == 0, res.output
    evaluated = json.loads(res.stdout)
    assert abs(evaluated["ndcg@10"] - trained["ndcg@10"]) < 1e-9  # same weights, same split

    res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(out), "--user", "196", "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)["items"]
    assert len(items) == 5 and all(i["title"] for i in items)
    assert len({i["item_id"] for i in items}) == 5

    res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(out), "--user", "196", "-k", "3"])
    assert res.exit_code == 0 and items[0]["title"][:10] in res.output


def test_recommend_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not a model directory" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["recommend", "train", "--dataset", str(tmp_path), "--output", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no interactions.csv.gz" in res.output
    res = runner.invoke(app, ["recommend", "train", "--model", "hllm", "--item-mode", "finetune", "--negatives", "0",
                              "--output", str(tmp_path / "h")])
    assert res.exit_code == 1 and "n_negatives=0" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "h").exists()


def test_recommend_hllm_with_an_hf_decoder_as_user_llm(tmp_path):
    """--user-llm: a tiny random Llama directory as HLLM's user model; the trained model directory keeps
    the decoder's config and weights, so it loads after the source directory is gone (transformers' load
    report goes to stderr, so the JSON line is read from stdout)."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    source = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(source)
    out = tmp_path / "hllm"
    res = runner.invoke(app, ["recommend", "train", "--model", "hllm", "--user-llm", str(source), "--dataset", "ml-100k",
                              "--output", str(out), "--epochs", "1", "--max-len", "10", "--json"])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout.strip().splitlines()[-1])
    saved = json.loads((out / "rankwise.json").read_text())["config"]
    assert saved["user_llm"] == str(source) and saved["hidden"] == 16 and (out / "user_llm" / "config.json").is_file()
    shutil.rmtree(source)
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert abs(json.loads(res.stdout.strip().splitlines()[-1])["ndcg@10"] - trained["ndcg@10"]) < 1e-9
    res = runner.invoke(app, ["recommend", "train", "--model", "hllm", "--user-llm", str(source), "--dataset", "ml-100k",
                              "--output", str(tmp_path / "h2")])
    assert res.exit_code == 1 and "cannot build hllm" in res.output and "Traceback" not in res.output


def test_recommend_predict_serves_an_onnx_export_like_its_pytorch_directory(tmp_path):
    out = tmp_path / "sasrec"
    res = runner.invoke(app, ["recommend", "train", "--model", "sasrec", "--dataset", "ml-100k", "--output", str(out),
                              "--epochs", "1", "--max-len", "20", "--hidden", "16", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", "--model-dir", str(out), "--output", str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    got = {}
    for name, directory in (("pytorch", out), ("onnx", tmp_path / "onnx")):
        res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(directory), "--user", "196", "-k", "5", "--json"])
        assert res.exit_code == 0, res.output
        got[name] = json.loads(res.stdout)["items"]
    assert [i["item_id"] for i in got["onnx"]] == [i["item_id"] for i in got["pytorch"]]
    assert all(i["title"] for i in got["onnx"])


@pytest.mark.parametrize("model", ["sasrec", "hcn", "hstu", "rearec-hstu"])
def test_recommend_train_sampled_softmax_on_the_device(tmp_path, model):
    out = tmp_path / model
    res = runner.invoke(app, ["recommend", "train", "--model", model, "--dataset", "ml-100k", "--output", str(out), "--epochs", "1",
                              "--max-len", "20", "--hidden", "16", "--loss", "sampled", "--sampled-negatives", "16",
                              "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "rankwise.json").read_text())
    assert meta["config"]["loss"] == "sampled" and meta["config"]["n_negatives"] == 16
    bad = runner.invoke(app, ["recommend", "train", "--model", "hllm", "--loss", "sampled", "--output", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "--loss sampled" in bad.output


def test_recommend_train_takes_the_hstu_authors_optimiser(tmp_path, monkeypatch):
    """--adam-beta2 0.98 --grad-clip 0 reach AdamW and switch clipping off (the HSTU authors' trainer)."""
    import torch

    seen: dict = {"betas": [], "clips": 0}
    real_adamw, real_clip = torch.optim.AdamW, torch.nn.utils.clip_grad_norm_

    def adamw(*args, **kwargs):
        seen["betas"].append(kwargs.get("betas"))
        return real_adamw(*args, **kwargs)

    def clip(*args, **kwargs):
        seen["clips"] += 1
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    common = ["recommend", "train", "--model", "hstu", "--dataset", "ml-100k", "--epochs", "1", "--max-len", "10",
              "--hidden", "8", "--loss", "sampled", "--sampled-negatives", "8", "--device", "cpu", "--json"]
    res = runner.invoke(app, [*common, "--output", str(tmp_path / "a"), "--adam-beta2", "0.98", "--grad-clip", "0"])
    assert res.exit_code == 0, res.output
    assert seen["betas"] == [(0.9, 0.98)] and seen["clips"] == 0
    res = runner.invoke(app, [*common, "--output", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert seen["betas"][-1] == (0.9, 0.999) and seen["clips"] > 0


def test_recommend_train_and_eval_under_the_hstu_protocol(tmp_path):
    out = tmp_path / "hstu-p"
    common = ["recommend", "train", "--model", "hstu", "--dataset", "ml-100k", "--protocol", "hstu", "--epochs", "1",
              "--max-len", "10", "--hidden", "8", "--loss", "sampled", "--sampled-negatives", "8", "--json"]
    bad = runner.invoke(app, [*common, "--output", str(out), "--eval-every", "1"])
    assert bad.exit_code == 1 and "no validation split" in bad.output and not out.exists()
    res = runner.invoke(app, [*common, "--output", str(out)])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    assert trained["protocol"] == "hstu"
    assert json.loads((out / "rankwise.json").read_text())["protocol"] == "hstu"
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--json"])  # the model's own protocol
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["protocol"] == "hstu" and abs(json.loads(res.stdout)["ndcg@10"] - trained["ndcg@10"]) < 1e-9
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--split", "valid", "--json"])
    assert res.exit_code == 1 and "no validation split" in res.output
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--protocol", "ours", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["protocol"] == "ours"


def test_recommend_predict_names_the_missing_weights_file(tmp_path):
    from rankwise.testing import tiny_sasrec_dir

    directory = tiny_sasrec_dir(tmp_path / "sasrec")
    (directory / "model.safetensors").unlink()
    res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(directory), "--user", "196", "-k", "3"])
    assert res.exit_code == 1
    assert "model.safetensors" in res.output and "None" not in res.output, res.output


def test_recommend_train_hllm_with_item_id_vectors_saves_and_reloads_them(tmp_path):
    out = tmp_path / "hllm-ids"
    res = runner.invoke(app, ["recommend", "train", "--model", "hllm", "--item-id-vectors", "--dataset", "ml-100k",
                              "--output", str(out), "--epochs", "1", "--max-len", "10", "--hidden", "16", "--json"])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout.strip().splitlines()[-1])
    assert json.loads((out / "rankwise.json").read_text())["config"]["item_id_vectors"] is True
    res = runner.invoke(app, ["recommend", "eval", "--model-dir", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert abs(json.loads(res.stdout.strip().splitlines()[-1])["ndcg@10"] - trained["ndcg@10"]) < 1e-9  # the id table reloads
