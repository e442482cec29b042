"""Loaders on the real shared data (exact counts from its README) and on broken files."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from migrec.data import (DataError, load_amazon_food_kitchen, load_movielens_1m, load_movielens_100k, load_table,
                         load_unisrec)
from migrec.data.schema import INTERACTION_COLUMNS


def _folder(shared_data: Path, name: str) -> Path:
    folder = shared_data / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def ml100k(shared_data):
    return load_movielens_100k(_folder(shared_data, "ml-100k"))


@pytest.fixture(scope="module")
def ml1m(shared_data):
    return load_movielens_1m(_folder(shared_data, "ml-1m"))


@pytest.fixture(scope="module")
def food_kitchen(shared_data):
    return load_amazon_food_kitchen(_folder(shared_data, "amazon-food-kitchen"))


@pytest.fixture(scope="module")
def scientific(shared_data):
    return load_unisrec(_folder(shared_data, "amazon-scientific-unisrec"), "Scientific")


def _title(dataset, item_id: str) -> str:
    cat = dataset.catalogue
    return cat.loc[cat["item_id"] == item_id, "title"].item()


def _assert_schema(dataset) -> None:
    inter = dataset.interactions
    assert list(inter.columns) == INTERACTION_COLUMNS
    assert all(isinstance(v, str) for v in inter["user_id"].iloc[:5])
    assert all(isinstance(v, str) for v in inter["item_id"].iloc[:5])
    assert inter["timestamp"].dtype == np.float64 and inter["rating"].dtype == np.float64
    assert dataset.meta["skipped_lines"] == []


# -- real data ----------------------------------------------------------------------
def test_movielens_100k_counts_and_text(ml100k):
    _assert_schema(ml100k)
    inter = ml100k.interactions
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943
    assert inter["item_id"].nunique() == 1682 and len(ml100k.catalogue) == 1682
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (inter["event"] == "rating").all() and (inter["domain"] == "movies").all()
    # first line of u.data: 196 242 3 881250949
    assert inter.iloc[0][["user_id", "item_id", "rating", "timestamp"]].tolist() == ["196", "242", 3.0, 881250949.0]
    days = pd.to_datetime(inter["timestamp"], unit="s").dt.strftime("%Y-%m-%d")
    assert (days.min(), days.max()) == ("1997-09-20", "1998-04-22")
    assert _title(ml100k, "543") == "Misérables, Les (1995)"  # latin-1 accent decoded
    toy = ml100k.catalogue.set_index("item_id").loc["1"]
    assert toy["category"] == "Animation, Children's, Comedy" and toy["year"] == "1995"
    assert len(ml100k.meta["users"]) == 943


def test_movielens_1m_default_ratings_and_extra_info(ml1m):
    _assert_schema(ml1m)
    inter = ml1m.interactions
    assert len(inter) == 487_650
    assert inter["user_id"].nunique() == 2999 and inter["item_id"].nunique() == 3615
    assert len(ml1m.catalogue) == 3883
    assert inter["timestamp"].notna().all() and inter["rating"].between(1, 5).all()
    assert _title(ml1m, "582") == "Metisse (Café au Lait) (1993)"
    cat = ml1m.catalogue.set_index("item_id")
    assert "Woody" in cat.loc["1", "description"] and cat.loc["1", "director"] == "John Lasseter"
    assert "Tom Hanks" in cat.loc["1", "actors"]
    # 36 plots are missing or "N/A" and 2 movies have no MeLU row: all become ""
    assert (cat["description"] == "").sum() == 38
    assert not cat["description"].str.fullmatch("N/A").any()
    assert len(ml1m.meta["users"]) == 6040


def test_movielens_1m_pairs_keep_file_order(shared_data):
    data = load_movielens_1m(_folder(shared_data, "ml-1m"), ratings="user_movie_pairs_all.tsv", extra_info=False)
    inter = data.interactions
    assert len(inter) == 1_000_209
    assert inter["user_id"].nunique() == 6040 and inter["item_id"].nunique() == 3706
    assert inter["timestamp"].isna().all() and inter["rating"].isna().all()
    assert inter.iloc[:2][["user_id", "item_id"]].values.tolist() == [["1", "1193"], ["1", "661"]]
    assert "description" not in data.catalogue.columns


def test_movielens_1m_several_rating_files(shared_data):
    files = ["ratings_users_1-2999.dat", "ratings_users_3000-6040_latest20pct.dat"]
    data = load_movielens_1m(_folder(shared_data, "ml-1m"), ratings=files, extra_info=False)
    assert len(data.interactions) == 487_650 + 36_581
    late = data.interactions.iloc[487_650:]
    assert late["user_id"].astype(int).min() >= 3000 and late["timestamp"].min() >= 975768738


def test_amazon_food_kitchen(food_kitchen):
    _assert_schema(food_kitchen)
    inter, cat = food_kitchen.interactions, food_kitchen.catalogue
    assert len(inter) == 436_127
    assert inter["domain"].value_counts().to_dict() == {"kitchen": 337_811, "food": 98_316}
    assert cat["domain"].value_counts().to_dict() == {"kitchen": 27_637, "food": 8_661}
    assert inter["user_id"].nunique() == 53_061 and inter["timestamp"].isna().all()
    kitchen0 = cat.set_index("item_id").loc["8661"]
    assert kitchen0["asin"] == "1567120709" and kitchen0["domain"] == "kitchen"
    held = food_kitchen.meta["heldout_users"]
    assert len(held["valid"]) == 960 and len(held["test"]) == 937 and held["valid"][0] == "valid:1"
    # file order is the order: the last item of each held-out user is the target
    for population, expected in (("valid", {"food": 363, "kitchen": 597}), ("test", {"food": 300, "kitchen": 637})):
        rows = inter[inter["user_id"].isin(held[population])]
        assert rows.groupby("user_id").tail(1)["domain"].value_counts().to_dict() == expected
    first = inter[inter["user_id"] == "A:1"]["item_id"].tolist()
    assert first == [str(i) for i in range(13)]  # train_A.txt line 1: 0,1,...,12


def test_unisrec_scientific(scientific):
    _assert_schema(scientific)
    inter = scientific.interactions
    assert len(inter) == 59_384
    assert inter["user_id"].nunique() == 8442 and inter["item_id"].nunique() == 4385
    assert len(scientific.catalogue) == 4385 and (scientific.catalogue["domain"] == "scientific").all()
    # test.inter line 2: user 0 = ABW8NXS7SV55K, items 0..12 then target 13; item 0 = B00TNNWMXI
    seq = inter[inter["user_id"] == "ABW8NXS7SV55K"]["item_id"].tolist()
    assert len(seq) == 14 and seq[0] == "B00TNNWMXI"
    assert _title(scientific, "B0000223SI").startswith("PORTER-CABLE 740000801")


# -- generic tables -----------------------------------------------------------------
def _log_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "uid": ["u1", "u1", "u2", "u3"],
        "movie": ["m1", "m2", "m1", "m3"],
        "when": ["2020-01-01T00:00:00Z", "2020-01-02", "2020-01-01 00:00:10", "2020-01-03T01:00:00+01:00"],
        "stars": [4.0, 5.0, 3.5, 1.0],
    })


_MAPPING = {"user_id": "uid", "item_id": "movie", "timestamp": "when", "rating": "stars"}
_DAY = 86_400.0
_T0 = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def test_table_csv_round_trip_with_catalogue(tmp_path):
    _log_frame().to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "items.tsv").write_text(
        'sku\tname\tgenre\nm1\t"Heat, ""the"" film"\tcrime\nm2\t"two\nlines"\tdrama\nm3\tThree\tcomedy\n'
        "m4\tCold item\tnone\n", encoding="utf-8")
    data = load_table(tmp_path / "log.csv", _MAPPING, catalogue=tmp_path / "items.tsv",
                      catalogue_columns={"item_id": "sku", "title": "name", "category": "genre"}, domain="films")
    inter = data.interactions
    assert inter["user_id"].tolist() == ["u1", "u1", "u2", "u3"]
    assert inter["timestamp"].tolist() == [_T0, _T0 + _DAY, _T0 + 10, _T0 + 2 * _DAY]
    assert inter["rating"].tolist() == [4.0, 5.0, 3.5, 1.0]
    assert (inter["domain"] == "films").all() and (inter["event"] == "interaction").all()
    cat = data.catalogue.set_index("item_id")
    assert cat.loc["m1", "title"] == 'Heat, "the" film' and cat.loc["m2", "title"] == "two\nlines"
    assert cat.loc["m4", "category"] == "none" and len(cat) == 4  # cold item kept


def test_table_parquet_round_trip_fsspec_url(tmp_path):
    import fsspec

    frame = _log_frame().assign(uid=[10, 10, 20, 30], when=pd.to_datetime(_log_frame()["when"], format="ISO8601",
                                                                             utc=True))
    with fsspec.open("memory://migrec-test/log.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)
    data = load_table("memory://migrec-test/log.parquet", _MAPPING)
    inter = data.interactions
    assert inter["user_id"].tolist() == ["10", "10", "20", "30"]
    assert inter["timestamp"].tolist() == [_T0, _T0 + _DAY, _T0 + 10, _T0 + 2 * _DAY]
    # minimal catalogue: every logged item, title = id
    assert data.catalogue["item_id"].tolist() == ["m1", "m2", "m3"]
    assert data.catalogue["title"].tolist() == ["m1", "m2", "m3"]
    # and the same table back from a local file
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    again = load_table(str(tmp_path / "log.parquet"), _MAPPING)
    pd.testing.assert_frame_equal(again.interactions, inter)


def test_table_missing_column_names_it(tmp_path):
    _log_frame().to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "log.csv", {"user_id": "uid", "item_id": "film"})
    assert err.value.field == "film" and err.value.line == 1 and "log.csv" in str(err.value)
    _log_frame().to_parquet(tmp_path / "log.parquet", index=False)
    with pytest.raises(DataError, match="missing column 'ts'") as err:
        load_table(tmp_path / "log.parquet", {"user_id": "uid", "item_id": "movie", "timestamp": "ts"})
    assert err.value.field == "ts"


def test_table_bad_timestamp_and_unknown_item(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,movie,when\nu1,m1,2020-01-01\nu1,m2,yesterday\n", encoding="utf-8")
    with pytest.raises(DataError, match="yesterday") as err:
        load_table(path, {"user_id": "uid", "item_id": "movie", "timestamp": "when"})
    assert (err.value.line, err.value.field) == (3, "when")
    cat = pd.DataFrame({"item_id": ["m1"], "title": ["One"]})
    path.write_text("uid,movie\nu1,m1\nu2,m9\n", encoding="utf-8")
    with pytest.raises(DataError, match="'m9' is not in the catalogue") as err:
        load_table(path, {"user_id": "uid", "item_id": "movie"}, catalogue=cat)
    assert (err.value.line, err.value.field) == (3, "movie")


def test_table_wrong_encoding(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes("uid,movie\nu1,m1\nu2,Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match="'utf-8'") as err:
        load_table(path, {"user_id": "uid", "item_id": "movie"})
    assert err.value.line == 3 and "log.csv" in str(err.value)
    data = load_table(path, {"user_id": "uid", "item_id": "movie"}, encoding="latin-1")
    assert data.interactions["item_id"].tolist() == ["m1", "Café"]


def test_table_skip_mode_reports_lines_and_parquet_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,movie,when\nu1,m1,2020-01-01\n,m2,2020-01-02\nu2,m3,soon\nu3,m1,5\n", encoding="utf-8")
    data = load_table(path, {"user_id": "uid", "item_id": "movie", "timestamp": "when"}, on_bad_lines="skip")
    assert data.interactions["user_id"].tolist() == ["u1", "u3"]
    assert [(s["line"], s["field"]) for s in data.meta["skipped_lines"]] == [(3, "uid"), (4, "when")]
    pd.DataFrame({"uid": ["a", "b", "c"], "movie": ["m1", "m1", "m2"]}).to_parquet(tmp_path / "log.parquet")
    cat = pd.DataFrame({"item_id": ["m1", "m1"], "title": ["One", "Again"]})
    data = load_table(tmp_path / "log.parquet", {"user_id": "uid", "item_id": "movie"}, catalogue=cat,
                      on_bad_lines="skip")
    assert len(data.interactions) == 2 and data.catalogue["title"].tolist() == ["One"]
    assert [(s["file"], s["row"], s["field"]) for s in data.meta["skipped_lines"]] == [
        ("<DataFrame>", 2, "item_id"), (str(tmp_path / "log.parquet"), 3, "movie")]
    with pytest.raises(DataError, match=r"row 3"):
        load_table(tmp_path / "log.parquet", {"user_id": "uid", "item_id": "movie"}, catalogue=cat.iloc[:1])


# -- broken MovieLens files -----------------------------------------------------------
_GENRES = "unknown|0\nAction|1\nComedy|2\n\n"


def _ml100k(folder: Path, data_lines: list[str], item_lines: list[str] | None = None) -> Path:
    """A tiny ML-100K folder (3 genres) with the given u.data lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.genre").write_text(_GENRES, encoding="latin-1")
    items = item_lines or ["1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1",
                           "2|Caf\u00e9 (1994)|01-Jan-1994||http://y|0|1|1"]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.data").write_text("\n".join(data_lines) + "\n", encoding="latin-1")
    return folder


_GOOD = ["1\t1\t5\t880000000", "1\t2\t3\t880000100", "2\t1\t4\t880000200"]


def test_tiny_movielens_100k_reads(tmp_path):
    data = load_movielens_100k(_ml100k(tmp_path / "ml", _GOOD))
    assert len(data.interactions) == 3 and data.catalogue["title"].tolist() == ["Toy Story (1995)", "Café (1994)"]
    assert data.catalogue["category"].tolist() == ["Comedy", "Action, Comedy"]


@pytest.mark.parametrize("bad_line, field, words", [
    ("2\t2\t4", "timestamp", "expected 4 fields"),
    ("2\t2\t4\t880000300\t9", "timestamp", "expected 4 fields"),
    ("2\t2\tfour\t880000300", "rating", "must be an integer"),
    ("2\t2\t4\t88000.5", "timestamp", "must be an integer"),
    ("x2\t2\t4\t880000300", "user_id", "integer id"),
    ("2\t7\t4\t880000300", "item_id", "not in the catalogue"),
])
def test_movielens_100k_bad_line_names_file_line_field(tmp_path, bad_line, field, words):
    folder = _ml100k(tmp_path / "ml", _GOOD[:2] + [bad_line] + _GOOD[2:])
    with pytest.raises(DataError, match=words) as err:
        load_movielens_100k(folder)
    assert err.value.file.endswith("u.data") and err.value.line == 3 and err.value.field == field
    assert "u.data" in str(err.value) and "line 3" in str(err.value) and repr(field) in str(err.value)


def test_line_numbers_count_blank_lines(tmp_path):
    folder = _ml100k(tmp_path / "ml", _GOOD[:1] + ["", ""] + ["1\t2\t3\tlate"])
    with pytest.raises(DataError) as err:
        load_movielens_100k(folder)
    assert (err.value.line, err.value.field) == (4, "timestamp")


def test_skip_bad_lines_reports_each(tmp_path, caplog):
    lines = _GOOD[:1] + ["2\t2\tfour\t880000300", "3\t9\t1\t880000400", "bad"] + _GOOD[1:]
    folder = _ml100k(tmp_path / "ml", lines)
    with caplog.at_level(logging.WARNING, logger="migrec.data"):
        data = load_movielens_100k(folder, on_bad_lines="skip")
    assert len(data.interactions) == 3
    skipped = data.meta["skipped_lines"]
    assert [(Path(s["file"]).name, s["line"], s["field"]) for s in skipped] == [
        ("u.data", 2, "rating"), ("u.data", 3, "item_id"), ("u.data", 4, "item_id")]
    assert all(s["reason"] for s in skipped)
    assert "skipped 3 bad line(s)" in caplog.text


def test_wrong_encoding_names_encoding_and_line(tmp_path):
    folder = tmp_path / "ml1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation\n2::Caf\u00e9 (1994)::Comedy\n"
                                       .encode("latin-1"))
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::4::978300761\n", encoding="ascii")
    # the MeLU file must be UTF-8; a latin-1 byte on line 2, in the plot field
    melu = ["1::Toy Story::1995::G::x::Animation::John Lasseter::w::Tom Hanks::A plot.::url",
            "2::Cafe::1994::G::x::Comedy::d::w::a::Caf\u00e9 plot::url"]
    (folder / "movies_extrainfos_MeLU.dat").write_bytes("\r\n".join(melu).encode("latin-1"))
    with pytest.raises(DataError, match="'utf-8'") as err:
        load_movielens_1m(folder, ratings="ratings.dat")
    assert err.value.line == 2 and err.value.field == "plot"
    assert "movies_extrainfos_MeLU.dat" in str(err.value)
    data = load_movielens_1m(folder, ratings="ratings.dat", extra_info=False)
    assert data.catalogue["title"].tolist()[1] == "Café (1994)"


def test_movielens_1m_double_colon_errors(tmp_path):
    folder = tmp_path / "ml1m"
    folder.mkdir()
    (folder / "movies.dat").write_text("1::A (1995)::Drama\n2::B (1996)::Comedy|Drama\n", encoding="latin-1")
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::4\n", encoding="ascii")
    with pytest.raises(DataError, match="expected 4 fields") as err:
        load_movielens_1m(folder, ratings="ratings.dat")
    assert (err.value.line, err.value.field) == (2, "timestamp")
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::4::978300761\n", encoding="ascii")
    data = load_movielens_1m(folder)  # default file absent: ratings.dat is used
    assert len(data.interactions) == 2
    assert data.catalogue["category"].tolist() == ["Drama", "Comedy, Drama"]


def test_loaders_accept_a_file_inside_the_folder(shared_data):
    data = load_movielens_100k(_folder(shared_data, "ml-100k") / "u.data")
    assert len(data.interactions) == 100_000
    name = "ratings_users_3000-6040_latest20pct.dat"
    late = load_movielens_1m(_folder(shared_data, "ml-1m") / name, extra_info=False)
    assert len(late.interactions) == 36_581 and late.meta["ratings_files"] == [name]


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        load_movielens_100k(tmp_path)
    assert err.value.file.endswith("u.genre")


# -- broken cross-domain / RecBole files ------------------------------------------------
def _food_kitchen(folder: Path, overlap: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "items_A_food.tsv").write_text(
        "local_index\tglobal_index\tasin\ttitle\n0\t0\tA0\tTea\n1\t1\tA1\t\"Jam, \"\"strawberry\"\"\"\n")
    (folder / "items_B_kitchen.tsv").write_text("local_index\tglobal_index\tasin\ttitle\n0\t2\tB0\tPan\n")
    (folder / "train_A.txt").write_text("1\t0,1\n")
    (folder / "train_B.txt").write_text("1\t2\n2\t2\n")
    (folder / "train_overlap.txt").write_text(overlap)
    (folder / "valid.txt").write_text("1\t0,2,1\n")
    (folder / "test.txt").write_text("1\t1,2\n")
    return folder


def test_food_kitchen_tiny_and_errors(tmp_path):
    data = load_amazon_food_kitchen(_food_kitchen(tmp_path / "ok", "1\t0,2\n"))
    assert data.interactions["user_id"].tolist() == ["A:1", "A:1", "B:1", "B:2", "AB:1", "AB:1",
                                                     "valid:1", "valid:1", "valid:1", "test:1", "test:1"]
    assert data.catalogue.set_index("item_id").loc["1", "title"] == 'Jam, "strawberry"'
    with pytest.raises(DataError, match="not in the catalogue") as err:
        load_amazon_food_kitchen(_food_kitchen(tmp_path / "unknown", "1\t0,2\n2\t1,7,0\n"))
    assert err.value.file.endswith("train_overlap.txt") and (err.value.line, err.value.field) == (2, "items")
    with pytest.raises(DataError, match="list of integer ids") as err:
        load_amazon_food_kitchen(_food_kitchen(tmp_path / "bad", "1\t0,2\n2\t0;2\n"))
    assert (err.value.line, err.value.field) == (2, "items")
    skipped = load_amazon_food_kitchen(_food_kitchen(tmp_path / "skip", "1\t0,2\n2\t1,7,0\n"), on_bad_lines="skip")
    assert len(skipped.interactions) == 11 and skipped.meta["skipped_lines"][0]["line"] == 2


def test_unisrec_bad_header_and_unknown_index(tmp_path):
    folder = tmp_path / "uni"
    folder.mkdir()
    (folder / "Toy.text").write_text("item_id:token\ttext:token_seq\nX1\tOne. Tools. Acme. \nX2\tTwo. \n")
    (folder / "Toy.item2index").write_text("X1\t0\nX2\t1\n")
    (folder / "Toy.user2index").write_text("R1\t0\nR2\t1\n")
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (folder / "Toy.test.inter").write_text(header + "0\t0\t1\n1\t1 0\t1\n")
    data = load_unisrec(folder, "Toy")
    assert data.interactions["item_id"].tolist() == ["X1", "X2", "X2", "X1", "X2"]
    assert data.catalogue["title"].tolist() == ["One. Tools. Acme.", "Two."] and data.domains == ["toy"]
    (folder / "Toy.test.inter").write_text(header + "0\t0\t1\n1\t1 5\t1\n")
    with pytest.raises(DataError, match="Toy.item2index") as err:
        load_unisrec(folder, "Toy")
    assert (err.value.line, err.value.field) == (3, "item_id_list")
    (folder / "Toy.test.inter").write_text("user\titems\ttarget\n0\t0\t1\n")
    with pytest.raises(DataError, match="header") as err:
        load_unisrec(folder, "Toy")
    assert err.value.line == 1 and err.value.field == "user_id:token"


# -- download (the network is replaced by a local archive) --------------------------------
def _archive(tmp_path: Path) -> Path:
    """A zip laid out like GroupLens's: ml-100k/u.data, u.item, u.genre."""
    import zipfile

    folder = _ml100k(tmp_path / "src" / "ml-100k", _GOOD)
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"ml-100k/{file.name}")
    return archive


def _serve(monkeypatch, archive: Path) -> list[str]:
    from migrec.data import download

    calls = []

    def fake_fetch(url, out, timeout=60.0):
        calls.append(url)
        out.write(archive.read_bytes())

    monkeypatch.setattr(download, "_fetch", fake_fetch)
    return calls


def test_download_checks_md5_then_extracts(tmp_path, monkeypatch):
    from migrec.data import download

    archive = _archive(tmp_path)
    calls = _serve(monkeypatch, archive)
    url = download.MOVIELENS["ml-100k"][0]
    monkeypatch.setitem(download.MOVIELENS, "ml-100k", (url, download.file_md5(archive)))
    folder = download.download_movielens("ml-100k", tmp_path / "dest")
    assert folder == tmp_path / "dest" / "ml-100k" and calls == [url]
    assert len(load_movielens_100k(folder).interactions) == 3
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["ml-100k"]  # no temp files left
    assert download.download_movielens("ml-100k", tmp_path / "dest") == folder and len(calls) == 1  # reused


def test_download_checksum_mismatch_extracts_nothing(tmp_path, monkeypatch):
    from migrec.data import download

    assert download.MOVIELENS["ml-100k"] == ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                                             "0e33842e24a9c977be4e0107933c0723")
    assert download.MOVIELENS["ml-1m"][1] == "c4d9eecfca2ab87c1945afe126590906"
    archive = _archive(tmp_path)
    _serve(monkeypatch, archive)  # our tiny zip cannot have GroupLens's checksum
    with pytest.raises(download.ChecksumError, match="0e33842e24a9c977be4e0107933c0723") as err:
        download.download_movielens("ml-100k", tmp_path / "dest")
    assert download.file_md5(archive) in str(err.value)
    assert list((tmp_path / "dest").iterdir()) == []


def test_resolve_movielens_prefers_local_folders(tmp_path, monkeypatch):
    from migrec.data import download

    calls = _serve(monkeypatch, _archive(tmp_path))
    monkeypatch.setattr(download, "_shared_roots", lambda: [])
    monkeypatch.delenv("MIGREC_DATA", raising=False)
    local = _ml100k(tmp_path / "mine" / "ml-100k", _GOOD)
    assert download.resolve_movielens(local, "ml-100k") == local
    assert download.resolve_movielens(tmp_path / "mine", "ml-100k") == local
    monkeypatch.setenv("MIGREC_DATA", str(tmp_path / "mine"))
    assert download.resolve_movielens(None, "ml-100k") == local
    assert calls == []
    monkeypatch.delenv("MIGREC_DATA")
    with pytest.raises(DataError, match="not found locally"):
        download.resolve_movielens(tmp_path / "empty", "ml-100k", download=False)
    # nothing local: download into the given folder (checksum of our archive accepted)
    monkeypatch.setitem(download.MOVIELENS, "ml-100k",
                        (download.MOVIELENS["ml-100k"][0], download.file_md5(tmp_path / "ml-100k.zip")))
    assert download.resolve_movielens(tmp_path / "empty", "ml-100k") == tmp_path / "empty" / "ml-100k"
    assert len(calls) == 1


def test_resolve_movielens_finds_shared_data(shared_data):
    from migrec.data import resolve_movielens

    folder = resolve_movielens(shared_data / "ml-100k", "ml-100k", download=False)
    assert (folder / "u.data").is_file()
