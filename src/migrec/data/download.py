"""Fetch MovieLens from GroupLens (on a machine with internet), checked by MD5.

`resolve_movielens` first looks for the files locally (the given folder,
$MIGREC_DATA/<name>, ../shared/data/<name>) and downloads only when none has them.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from .schema import DataError

logger = logging.getLogger("migrec.data")

BASE_URL = "https://files.grouplens.org/datasets/movielens"
# Published MD5 of the GroupLens archives (GroupLens serves them as <name>.zip.md5).
MOVIELENS = {
    "ml-100k": (f"{BASE_URL}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": (f"{BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
}
_ML1M_RATINGS = ("ratings.dat", "ratings_users_1-2999.dat", "user_movie_pairs_all.tsv")


class ChecksumError(DataError):
    """A downloaded file does not have the published checksum."""


def _check_name(name: str) -> None:
    if name not in MOVIELENS:
        raise ValueError(f"unknown MovieLens set {name!r}; choose one of {sorted(MOVIELENS)}")


def has_movielens_files(folder: str | Path, name: str) -> bool:
    """Whether `folder` holds what the loader for `name` needs."""
    _check_name(name)
    folder = Path(folder)
    if name == "ml-100k":
        return all((folder / f).is_file() for f in ("u.data", "u.item", "u.genre"))
    return (folder / "movies.dat").is_file() and any((folder / f).is_file() for f in _ML1M_RATINGS)


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, out: BinaryIO, timeout: float = 60.0) -> None:
    """Stream `url` into `out` (kept separate so tests can replace the network)."""
    import requests

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            for block in response.iter_content(chunk_size=1 << 20):
                out.write(block)
    except requests.RequestException as err:
        raise DataError(f"download failed: {err}", file=url) from err


def _extract(archive: Path, dest: Path, name: str) -> Path:
    """Unzip into a temporary folder beside `dest/name`, then move it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        with zipfile.ZipFile(archive) as zf:
            root = staging.resolve()
            for member in zf.namelist():  # refuse paths that would escape the folder
                if not (staging / member).resolve().is_relative_to(root):
                    raise DataError(f"unsafe path {member!r} in the archive", file=str(archive))
            zf.extractall(staging)
        inner = staging / name if (staging / name).is_dir() else staging
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(inner), str(target))
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_movielens(name: str = "ml-100k", dest_dir: str | Path | None = None, force: bool = False) -> Path:
    """Download `name` ("ml-100k" or "ml-1m") into `dest_dir`/<name> and return that folder.

    The archive is streamed to a temporary file, its MD5 compared with the published
    value (ChecksumError on mismatch; nothing is extracted then), and unzipped.
    An existing complete folder is reused unless `force`.
    """
    _check_name(name)
    url, expected = MOVIELENS[name]
    dest = Path(dest_dir) if dest_dir is not None else default_data_dir()
    if has_movielens_files(dest / name, name) and not force:
        return dest / name
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=dest)
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s to %s", url, dest)
        with os.fdopen(fd, "wb") as fh:
            _fetch(url, fh)
        got = file_md5(tmp)
        if got != expected:
            raise ChecksumError(f"MD5 checksum mismatch: expected {expected}, got {got}; the download is "
                                f"corrupt or the archive changed upstream", file=url)
        folder = _extract(tmp, dest, name)
    finally:
        tmp.unlink(missing_ok=True)
    if not has_movielens_files(folder, name):
        raise DataError(f"the archive did not contain the expected {name} files", file=url)
    return folder


def default_data_dir() -> Path:
    """$MIGREC_DATA, else ~/.cache/migrec/data."""
    env = os.environ.get("MIGREC_DATA")
    return Path(env) if env else Path.home() / ".cache" / "migrec" / "data"


def _shared_roots() -> list[Path]:
    """../shared/data beside the repository checkout and beside the working directory."""
    repo = Path(__file__).resolve().parents[3]  # src/migrec/data/download.py -> repository root
    return [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def _candidates(path: str | Path | None, name: str) -> list[Path]:
    found = []
    if path is not None:
        found += [Path(path), Path(path) / name]
    if os.environ.get("MIGREC_DATA"):
        found.append(Path(os.environ["MIGREC_DATA"]) / name)
    return found + [root / name for root in _shared_roots()]


def resolve_movielens(path: str | Path | None = None, name: str = "ml-100k", download: bool = True) -> Path:
    """A folder holding MovieLens `name`: the given one (or its <name> subfolder),
    $MIGREC_DATA/<name>, or ../shared/data/<name>; otherwise download it (into `path`
    when given, else the default data folder)."""
    _check_name(name)
    for folder in _candidates(path, name):
        if has_movielens_files(folder, name):
            return folder
    if not download:
        raise DataError(f"{name} not found locally and download=False", file=str(path) if path else None)
    if path is None:
        dest = default_data_dir()
    else:  # a folder already named like the set is the target itself
        dest = Path(path).parent if Path(path).name == name else Path(path)
    return download_movielens(name, dest)
