"""``rankwise train cross-encoder`` objective options reach the trainer's config, or fail in one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rankwise.cli import app


@pytest.mark.parametrize(("args", "message"), [
    (["--objective", "listmle", "--listmle-ties", "score"], "--listmle-ties score: separate or random"),
    (["--objective", "listnet", "--listmle-ties", "random"], "--listmle-ties random: a ListMLE option, but --objective is listnet"),
])
def test_listmle_ties_is_checked(tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "cross-encoder", "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.output, result.output


def test_listmle_ties_reaches_the_objective(tmp_path, monkeypatch):
    import rankwise.train.cross_encoder_trainer as trainer_module
    from rankwise.train.losses import make_objective

    seen = {}

    def fake_train_on_beir(dataset, config, **kwargs):
        seen["loss"] = make_objective(config.objective, **config.objective_kwargs)
        return {"steps": 0, "train_s": 0.0, "final_loss": 0.0}

    monkeypatch.setattr(trainer_module, "train_on_beir", fake_train_on_beir)
    result = CliRunner().invoke(app, ["train", "cross-encoder", "--objective", "listmle", "--listmle-ties", "random",
                                      "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert seen["loss"].get_config_dict() == {"objective": "listmle", "ties": "random"}


@pytest.mark.parametrize(("args", "message"), [
    (["--objective", "listnet", "--objective-arg", "temprature=0.5"],
     "--objective-arg 'temprature=0.5': ListNetLoss has no knob 'temprature' (its knobs: temperature)"),
    (["--objective", "listnet", "--objective-arg", "temperature=warm"], "--objective-arg 'temperature=warm': expected a number"),
    (["--objective", "lipo", "--objective-arg", "weighting=ndcg"], "--objective-arg 'weighting=ndcg': choose one of lambda, none"),
    (["--objective", "listnet", "--objective-arg", "temperature"], "--objective-arg 'temperature': expected KEY=VALUE"),
    (["--objective", "listmle", "--objective-arg", "ties=score"], "--objective-arg: ListMLELoss: ties must be 'separate' or 'random'"),
    (["--objective", "listmle", "--objective-arg", "ties=random", "--listmle-ties", "random"],
     "--listmle-ties and --objective-arg ties=... both set ListMLE's tie rule"),
])
def test_objective_args_are_checked(tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "cross-encoder", "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "config"), [
    (["--objective", "listnet", "--objective-arg", "temperature=0.5"], {"objective": "listnet", "temperature": 0.5}),
    (["--objective", "listmle", "--objective-arg", "ties=random"], {"objective": "listmle", "ties": "random"}),
    (["--objective", "ranknet"], {"objective": "ranknet", "sigma": 1.0}),
])
def test_objective_args_reach_the_objective(tmp_path, monkeypatch, args, config):
    import rankwise.train.cross_encoder_trainer as trainer_module
    from rankwise.train.losses import make_objective

    seen = {}

    def fake_train_on_beir(dataset, cfg, **kwargs):
        seen["loss"] = make_objective(cfg.objective, **cfg.objective_kwargs)
        return {"steps": 0, "train_s": 0.0, "final_loss": 0.0}

    monkeypatch.setattr(trainer_module, "train_on_beir", fake_train_on_beir)
    result = CliRunner().invoke(app, ["train", "cross-encoder", *args, "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert seen["loss"].get_config_dict() == config


def test_objective_kwargs_convert_by_annotation():
    from rankwise.train.losses import LambdaLoss, LiPOLambdaLoss, PointwiseBCELoss
    from rankwise.train.losses.knobs import objective_kwargs

    assert objective_kwargs(PointwiseBCELoss, ["pos_weight=4", "max_label=2"]) == {"pos_weight": 4.0, "max_label": 2.0}
    assert objective_kwargs(PointwiseBCELoss, ["pos_weight=none"]) == {"pos_weight": None}
    assert objective_kwargs(LambdaLoss, ["k=10", "scheme=ndcg2"])["k"] == 10
    assert objective_kwargs(LiPOLambdaLoss, ["max-label=3"]) == {"max_label": 3.0}
    with pytest.raises(ValueError, match="'k=ten': not one of|'k=ten': expected an integer"):
        objective_kwargs(LambdaLoss, ["k=ten"])
    with pytest.raises(ValueError, match="given twice"):
        objective_kwargs(PointwiseBCELoss, ["pos_weight=1", "pos_weight=2"])
