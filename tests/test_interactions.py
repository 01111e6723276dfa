"""Interaction loading: both layouts, chronological order, and loud failures on bad input."""

import gzip
from pathlib import Path

import polars as pl
import pytest

from rankwise.eval.datasets.interactions import InteractionDataError, item_text, load_interactions, recbole_ml100k_dir


def _write_folder(path: Path, rows: list[tuple], items: list[str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with gzip.open(path / "interactions.csv.gz", "wt") as f:
        f.write("user_id,item_id,seq_index\n")
        f.writelines(f"{u},{i},{s}\n" for u, i, s in rows)
    if items is not None:
        with gzip.open(path / "items.csv.gz", "wt") as f:
            f.write("item_id,title\n")
            f.writelines(f"{i},Title {i}\n" for i in items)
    return path


def test_ml100k_embedded_default_loads_from_recbole_wheel():
    data = load_interactions("ml-100k")
    assert (data.n_users, data.n_items, data.interactions.height) == (943, 1682, 100_000)
    assert data.text_fields() == ["title", "year", "genres"]
    assert recbole_ml100k_dir().name == "ml-100k"


def test_ml100k_sequences_follow_timestamps_with_stable_ties():
    raw = pl.read_csv(recbole_ml100k_dir() / "ml-100k.inter", separator="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    user = raw.filter(pl.col("user_id") == 196).with_row_index("row").sort("timestamp", "row")
    data = load_interactions("ml-100k").interactions.filter(pl.col("user_id") == "196")
    assert data["item_id"].to_list() == [str(i) for i in user["item_id"].to_list()]
    assert data["seq_index"].to_list() == list(range(user.height))


def test_shared_folder_layout(data_dir):
    data = load_interactions(data_dir / "recsys" / "amazon2018_scientific")
    assert (data.n_users, data.n_items) == (8317, 4344)
    assert "description" in data.text_fields()


def test_duplicate_rows_fail_with_the_file_named(tmp_path):
    path = _write_folder(tmp_path / "d", [(1, "a", 0), (1, "b", 1), (1, "b", 1), (1, "c", 2)])
    with pytest.raises(InteractionDataError, match=r"interactions.csv.gz: 1 duplicate \(user_id, seq_index\)"):
        load_interactions(path)


def test_unknown_item_ids_fail(tmp_path):
    path = _write_folder(tmp_path / "d", [(1, "a", 0), (1, "b", 1), (1, "zz", 2)], items=["a", "b"])
    with pytest.raises(InteractionDataError, match="not in the item catalog, e.g. item_id zz"):
        load_interactions(path)


def test_short_users_fail_unless_dropped(tmp_path):
    rows = [(1, "a", 0), (1, "b", 1), (1, "c", 2), (2, "a", 0), (2, "b", 1)]
    path = _write_folder(tmp_path / "d", rows)
    with pytest.raises(InteractionDataError, match="1 users have fewer than 3 interactions"):
        load_interactions(path)
    assert load_interactions(path, drop_short_users=True).n_users == 1


def test_seq_index_gaps_fail(tmp_path):
    path = _write_folder(tmp_path / "d", [(1, "a", 0), (1, "b", 2), (1, "c", 3)])
    with pytest.raises(InteractionDataError, match="seq_index' is not 0..n-1"):
        load_interactions(path)


def test_item_text_template_skips_empty_fields():
    assert item_text({"title": "Heat", "genres": "Action|Crime", "description": ""}) == "title: Heat genres: Action, Crime"
