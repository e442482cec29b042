"""MovieLens loaders: ML-100K (`u.data`, `u.item`) and ML-1M (GroupLens `::` files)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ._records import (BadLines, Field, OnBadLines, check_values, data_folder, keep_first, keep_known,
                       read_records, read_text, split_header, tokenise)
from .schema import ITEM, DataError, Dataset, make_catalogue, make_interactions

logger = logging.getLogger("migrec.data")

DOMAIN_MOVIES = "movies"
_RATING_FIELDS = [Field("user_id", "id"), Field("item_id", "id"), Field("rating", "int"), Field("timestamp", "int")]


def _file(folder: str | Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.exists():
        raise DataError(f"file not found in {folder}", file=str(path))
    return path


def _log(ratings: pd.DataFrame, lines: np.ndarray, catalogue: pd.DataFrame, file: Path, bad: BadLines,
         catalogue_file: str) -> pd.DataFrame:
    """Schema interactions from checked rating rows; unknown movies are bad lines."""
    keep = keep_known(ratings["item_id"], lines, pd.Index(catalogue[ITEM]), str(file), "item_id", bad,
                      f"the catalogue ({catalogue_file})")
    ratings = ratings[keep]
    timestamp = ratings["timestamp"] if "timestamp" in ratings else None
    rating = ratings["rating"] if "rating" in ratings else None
    return make_interactions(ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy(), domain=DOMAIN_MOVIES,
                             event="rating", timestamp=timestamp, rating=rating)


def _genre_names(folder: Path, bad: BadLines) -> list[str]:
    """Genre names in flag order, from `u.genre` (`name|index`)."""
    path = _file(folder, "u.genre")
    frame, _ = read_records(path, [Field("name", "token"), Field("index", "int")], sep="|",
                            encoding="latin-1", bad=bad)
    return frame.sort_values("index")["name"].tolist()


# -- ML-100K ------------------------------------------------------------------------
def load_movielens_100k(path: str | Path, on_bad_lines: OnBadLines = "raise") -> Dataset:
    """MovieLens 100K from a folder (or a file in it) holding `u.data`, `u.item` and
    `u.genre` (`u.user` optional).

    Catalogue: item_id, domain "movies", title, category (genres joined by ", "),
    year, release_date. Log: one "rating" event per line of `u.data`.
    """
    folder = data_folder(path)
    bad = BadLines(on_bad_lines)
    genres = _genre_names(folder, bad)
    flags = [Field(f"genre_{i}", "int") for i in range(len(genres))]
    fields = [Field("item_id", "id"), Field("title"), Field("release_date"), Field("video_release_date"),
              Field("url")] + flags
    item_file = _file(folder, "u.item")
    items, item_lines = read_records(item_file, fields, sep="|", encoding="latin-1", bad=bad)
    items = items[keep_first(items["item_id"], item_lines, str(item_file), "item_id", bad)].reset_index(drop=True)
    flag_matrix = items[[f.name for f in flags]].to_numpy() > 0
    category = [", ".join(g for g, on in zip(genres, row) if on) for row in flag_matrix]
    catalogue = make_catalogue(items["item_id"], items["title"], domain=DOMAIN_MOVIES, category=category,
                               year=items["release_date"].str.extract(r"(\d{4})\s*$")[0].fillna(""),
                               release_date=items["release_date"])
    data_file = _file(folder, "u.data")
    ratings, lines = read_records(data_file, _RATING_FIELDS, sep="\t", encoding="latin-1", bad=bad)
    log = _log(ratings, lines, catalogue, data_file, bad, item_file.name)
    meta = {"source": str(folder), "users": _users_100k(folder, bad)}
    bad.publish(meta, "ml-100k")
    return Dataset(log, catalogue, "ml-100k", meta)


def _users_100k(folder: Path, bad: BadLines) -> pd.DataFrame | None:
    path = folder / "u.user"
    if not path.exists():
        return None
    fields = [Field("user_id", "id"), Field("age", "int"), Field("gender"), Field("occupation"), Field("zip")]
    frame, _ = read_records(path, fields, sep="|", encoding="latin-1", bad=bad)
    return frame


# -- ML-1M --------------------------------------------------------------------------
def _movies_1m(folder: Path, bad: BadLines) -> tuple[pd.DataFrame, Path]:
    path = _file(folder, "movies.dat")
    fields = [Field("item_id", "id"), Field("title"), Field("genres")]
    movies, lines = read_records(path, fields, sep="::", encoding="latin-1", bad=bad)
    movies = movies[keep_first(movies["item_id"], lines, str(path), "item_id", bad)].reset_index(drop=True)
    return movies, path


_NOT_RATINGS = ("movies.dat", "users.dat", "movies_extrainfos_MeLU.dat", "README")
_MELU_FIELDS = ["item_id", "title", "year", "rated", "released", "genre", "director", "writer", "actors",
                "plot", "poster"]


def _extra_info(folder: Path, bad: BadLines) -> pd.DataFrame | None:
    """Plot, director and actors from the MeLU file (UTF-8, CRLF), or None when absent."""
    path = folder / "movies_extrainfos_MeLU.dat"
    if not path.exists():
        return None
    fields = [Field("item_id", "id")] + [Field(n) for n in _MELU_FIELDS[1:]]
    extra, lines = read_records(path, fields, sep="::", encoding="utf-8", bad=bad)
    extra = extra[keep_first(extra["item_id"], lines, str(path), "item_id", bad)]
    out = extra[["item_id", "plot", "director", "actors"]].rename(columns={"plot": "description"})
    for col in ("description", "director", "actors"):  # OMDb writes "N/A" for unknown
        out[col] = out[col].str.strip().replace("N/A", "")
    return out


def _ratings_file(folder: Path, name: str, bad: BadLines) -> tuple[pd.DataFrame, np.ndarray, Path]:
    """`::` ratings (user, movie, rating, timestamp) or a `.tsv` of (user, movie) pairs
    with a header line; pairs keep file order and get NaN rating and timestamp."""
    path = Path(name) if Path(name).is_absolute() else folder / name
    if not path.exists():
        raise DataError("ratings file not found (on a full ML-1M download use ratings='ratings.dat')",
                        file=str(path))
    if path.suffix.lower() != ".tsv":
        frame, lines = read_records(path, _RATING_FIELDS, sep="::", encoding="latin-1", bad=bad)
        return frame, lines, path
    fields = [Field("user_id", "id"), Field("item_id", "id")]
    header, body = split_header(read_text(path, "latin-1", "\t", [f.name for f in fields]))
    if len(header.split("\t")) != 2:
        raise DataError(f"expected a header with 2 tab-separated columns (user, movie), got {header[:60]!r}",
                        file=str(path), line=1)
    frame, lines = tokenise(body, [f.name for f in fields], "\t", 2, str(path), bad)
    frame, lines = check_values(frame, lines, fields, str(path), bad)
    return frame, lines, path


def load_movielens_1m(path: str | Path, ratings: str | list[str] = "ratings_users_1-2999.dat",
                      extra_info: bool = True, on_bad_lines: OnBadLines = "raise") -> Dataset:
    """MovieLens 1M from a folder with `movies.dat` and one or several ratings files
    (`path` may also be a ratings file, which is then the one read).

    `ratings`: a file name or a list (read in that order), e.g. "ratings.dat" (full
    GroupLens download; used automatically when the default file is absent but it is
    present), "ratings_users_1-2999.dat", "ratings_users_3000-6040_latest20pct.dat",
    or "user_movie_pairs_all.tsv" (pairs only: timestamp and rating NaN, file order).
    `users.dat`, when present, goes to `meta["users"]`. With `extra_info`, the MeLU
    file (when present) adds description (plot), director and actors to the catalogue.
    """
    folder = data_folder(path)
    if Path(path).is_file() and Path(path).name not in _NOT_RATINGS:  # a ratings file was given
        ratings = Path(path).name
    bad = BadLines(on_bad_lines)
    names = [ratings] if isinstance(ratings, (str, Path)) else list(ratings)
    if names == ["ratings_users_1-2999.dat"] and not (folder / names[0]).exists() \
            and (folder / "ratings.dat").exists():
        logger.info("%s: using ratings.dat (full GroupLens release)", folder)
        names = ["ratings.dat"]
    movies, movie_file = _movies_1m(folder, bad)
    text = {"category": movies["genres"].str.replace("|", ", ", regex=False),
            "year": movies["title"].str.extract(r"\((\d{4})\)\s*$")[0].fillna("")}
    extra = _extra_info(folder, bad) if extra_info else None
    if extra is not None:
        joined = movies[["item_id"]].merge(extra, on="item_id", how="left").fillna("")
        text.update({c: joined[c] for c in ("description", "director", "actors")})
    catalogue = make_catalogue(movies["item_id"], movies["title"], domain=DOMAIN_MOVIES, **text)
    logs = []
    for name in names:
        frame, lines, file = _ratings_file(folder, str(name), bad)
        logs.append(_log(frame, lines, catalogue, file, bad, movie_file.name))
    log = pd.concat(logs, ignore_index=True) if logs else make_interactions([], [])
    meta = {"source": str(folder), "ratings_files": [str(n) for n in names], "users": _users_1m(folder, bad)}
    bad.publish(meta, "ml-1m")
    return Dataset(log, catalogue, "ml-1m", meta)


def _users_1m(folder: Path, bad: BadLines) -> pd.DataFrame | None:
    path = folder / "users.dat"
    if not path.exists():
        return None
    fields = [Field("user_id", "id"), Field("gender"), Field("age", "int"), Field("occupation", "int"),
              Field("zip")]
    frame, _ = read_records(path, fields, sep="::", encoding="latin-1", bad=bad)
    return frame
