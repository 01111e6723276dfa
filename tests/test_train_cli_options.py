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
