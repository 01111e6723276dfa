"""All-users export: `recommend predict --all-users --output X.parquet` (batched user tower, chunked,
resumable) agrees with one-user `recommend`, for PyTorch and ONNX recommenders."""

from __future__ import annotations

import csv
import gzip
import json
import random

import polars as pl
import pytest
from typer.testing import CliRunner

from rankwise.cli import app
from rankwise.recsys.batch_predict import AllUsersConfig, dataset_histories, export_all_users, recommend_all_users
from rankwise.serving.api import Recommender
from rankwise.serving.export import export_model
from rankwise.testing import tiny_recommender_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """30 users with histories of 1..34 items (some longer than max_len 20) over i1..i40, one user
    whose only item ('zz') no model knows."""
    root = tmp_path_factory.mktemp("interactions") / "toy"
    root.mkdir()
    rng = random.Random(0)
    rows = []
    for u in range(30):
        items = rng.sample([f"i{k}" for k in range(1, 41)], rng.randint(1, 34))
        rows += [(f"u{u:02d}", item, n) for n, item in enumerate(items)]
    rows.append(("u99", "zz", 0))
    with gzip.open(root / "interactions.csv.gz", "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "seq_index"])
        w.writerows(rows)
    with gzip.open(root / "items.csv.gz", "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "title"])
        w.writerows([(f"i{k}", f"item {k}") for k in range(1, 41)] + [("zz", "unknown to the models")])
    return root


@pytest.mark.parametrize("kind", ["sasrec", "hstu", "hcn-max", "hllm"])
def test_recommend_many_equals_one_user_at_a_time(tmp_path, dataset, kind):
    rec = Recommender.load(tiny_recommender_dir(tmp_path / kind, kind), device="cpu")
    histories = [h for _, h in dataset_histories(str(dataset)) if h != ["zz"]]
    assert max(len(h) for h in histories) > rec.max_len  # cut histories are in the batch
    many = rec.recommend_many(histories, k=5)
    for history, hits in zip(histories, many):
        one = rec.recommend(history, k=5)
        assert [h.item_id for h in hits] == [h.item_id for h in one]
        assert [h.score for h in hits] == pytest.approx([h.score for h in one], abs=1e-5)
        assert not {h.item_id for h in hits} & set(history)


def test_all_users_export_onnx_matches_recommend_and_resumes_byte_for_byte(tmp_path, dataset):
    model = tiny_recommender_dir(tmp_path / "sasrec", "sasrec")
    meta = json.loads((model / "rankwise.json").read_text())
    meta["dataset"] = str(dataset)
    (model / "rankwise.json").write_text(json.dumps(meta))
    onnx = tmp_path / "onnx"
    export_model(model, onnx)
    whole = tmp_path / "whole.parquet"
    res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(onnx), "--all-users", "--output", str(whole),
                              "-k", "4", "--batch-users", "7", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["users"] == 30 and summary["skipped_users"] == 1  # u99 knows no item
    frame = pl.read_parquet(whole)
    assert frame.columns == ["user_id", "rank", "item_id", "score"] and frame.height == 30 * 4
    rec = Recommender.load(onnx, device="cpu")
    for user, history in dataset_histories(str(dataset))[:30]:
        got = frame.filter(pl.col("user_id") == user).sort("rank")
        assert got["item_id"].to_list() == [h.item_id for h in rec.recommend(history, k=4)]

    # killed after the first of three chunks, then resumed: the same file, byte for byte
    cut = tmp_path / "cut.parquet"
    config = AllUsersConfig(cut, k=4, batch_users=7, chunk_users=11)

    def die(i: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_all_users(onnx, config, on_chunk=die)
    assert not cut.exists() and (tmp_path / "cut.parquet.parts" / "chunk-00000.parquet").is_file()
    res = runner.invoke(app, ["recommend", "predict", "--model-dir", str(onnx), "--all-users", "--output", str(cut),
                              "-k", "4", "--batch-users", "7", "--json"])
    assert res.exit_code == 1 and "resume" in res.output  # parts of an earlier job: refused without --resume
    with pytest.raises(Exception, match="changed since it was started"):  # another k: not the same job
        export_all_users(onnx, AllUsersConfig(cut, k=5, batch_users=7, chunk_users=11, resume=True))
    resumed = export_all_users(onnx, AllUsersConfig(cut, k=4, batch_users=7, chunk_users=11, resume=True))
    assert resumed.chunks == 3 and resumed.chunks_reused == 1
    reference = export_all_users(onnx, AllUsersConfig(tmp_path / "ref.parquet", k=4, batch_users=7, chunk_users=11))
    assert cut.read_bytes() == reference.output.read_bytes() and not (tmp_path / "cut.parquet.parts").exists()
    assert pl.read_parquet(cut)["item_id"].to_list() == frame["item_id"].to_list()  # other batches, same lists


def test_all_users_bad_input_is_one_line(tmp_path, dataset):
    model = tiny_recommender_dir(tmp_path / "sasrec", "sasrec")
    base = ["recommend", "predict", "--model-dir", str(model), "--dataset", str(dataset)]
    for extra, message in [([], "--user USER, or --all-users"),
                           (["--all-users"], "--all-users needs --output"),
                           (["--all-users", "--output", str(tmp_path / "x.csv")], "writes .parquet")]:
        res = runner.invoke(app, base + extra)
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
    out = tmp_path / "top.parquet"
    assert runner.invoke(app, base + ["--all-users", "--output", str(out)]).exit_code == 0
    res = runner.invoke(app, base + ["--all-users", "--output", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert runner.invoke(app, base + ["--all-users", "--output", str(out), "--overwrite"]).exit_code == 0


def test_recommend_all_users_refuses_a_user_twice(tmp_path):
    with pytest.raises(Exception, match="appears twice"):
        recommend_all_users(lambda h, k, e: [[] for _ in h], [("a", ["1"]), ("a", ["2"])],
                            AllUsersConfig(tmp_path / "o.parquet"), "m")
