"""Importers on the real datasets and on tiny files in each published layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from recloop import importers
from recloop.data import read_dataset
from recloop.importers import DatasetImportError, import_dataset

pytestmark = pytest.mark.unit

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _real(name: str) -> Path:
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"real dataset {path} not present")
    return path


def _check_canonical(dest: Path) -> None:
    """What CONTRACT §1 promises: string ids, int64 timestamps, text columns without nulls."""
    back = read_dataset(dest)
    assert (dest / "items.parquet").exists() and (dest / "interactions.parquet").exists()
    assert back.items["item_id"].is_unique
    assert back.interactions["timestamp"].dtype == "int64"
    for column in ("user_id", "item_id"):
        assert all(isinstance(v, str) for v in back.interactions[column].head(50))
    assert back.items["title"].notna().all() and back.items["text"].notna().all()
    assert set(back.interactions["item_id"]) <= set(back.items["item_id"])


# ----------------------------------------------------------------------------- real datasets


@pytest.mark.data
def test_movielens_latest_small(tmp_path: Path) -> None:
    src = _real("movielens-latest-small")
    dataset = import_dataset("movielens", src, tmp_path / "ml")
    summary = dataset.summary()
    assert (summary["users"], summary["items"], summary["interactions"]) == (610, 9742, 100836)
    assert set(dataset.interactions["event"]) == {"rating"}
    assert dataset.interactions["rating"].between(0.5, 5.0).all()
    toy = dataset.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["text"].startswith("Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags:")
    assert "pixar" in toy["text"].lower()
    _check_canonical(tmp_path / "ml")


@pytest.mark.data
def test_amazon_instruments_2014(tmp_path: Path) -> None:
    src = _real("amazon-instruments-2014")
    dataset = import_dataset("amazon-reviews", src, tmp_path / "az")
    summary = dataset.summary()
    assert (summary["users"], summary["items"], summary["interactions"]) == (1429, 900, 10261)
    assert (dataset.items["title"] == "").all()  # no metadata file in this folder
    lengths = dataset.items["text"].str.len()
    assert lengths.max() <= importers.MAX_REVIEW_CHARS and lengths.min() > 0
    assert not dataset.items["text"].str.contains("&#34;", regex=False).any()
    _check_canonical(tmp_path / "az")


@pytest.mark.data
def test_canonical_amazon_office(tmp_path: Path) -> None:
    src = _real("amazon-office-2014")
    dataset = import_dataset("canonical", src, tmp_path / "office")
    summary = dataset.summary()
    assert (summary["users"], summary["items"], summary["interactions"]) == (4905, 2420, 53258)
    first = dataset.interactions[dataset.interactions["user_id"] == "0"]
    assert list(first["timestamp"]) == list(range(len(first)))  # position became the timestamp
    phone = dataset.items.set_index("item_id").loc["0"]
    assert phone["title"].startswith("VTECH CS6114")
    assert phone["text"] == (
        "Brand: VTech. Categories: Office Electronics, Telephones & Accessories, "
        "Cordless Telephones"
    )
    assert not dataset.items["text"].str.contains("&amp;", regex=False).any()
    _check_canonical(tmp_path / "office")


# ----------------------------------------------------------------------------- MovieLens layouts


def _write_100k(root: Path, with_genre_file: bool) -> None:
    root.mkdir(parents=True)
    (root / "u.data").write_text("1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960\n")
    flags_1 = ["0"] * 19
    flags_1[3] = flags_1[5] = "1"  # Animation, Comedy
    flags_2 = ["0"] * 19
    flags_2[8] = "1"  # Drama
    lines = [
        "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x", *flags_1]),
        "|".join(["2", "Misérables, Les (1995)", "01-Jan-1995", "", "http://y", *flags_2]),
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("iso-8859-1"))
    if with_genre_file:
        names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
        genre_lines = "".join(f"{name}|{i}\n" for i, name in enumerate(names))
        (root / "u.genre").write_text(genre_lines + "\n")


@pytest.mark.parametrize("with_genre_file", [True, False])
def test_movielens_100k_layout(tmp_path: Path, with_genre_file: bool) -> None:
    _write_100k(tmp_path / "ml-100k", with_genre_file)
    # The published zip unpacks into a folder: pointing at its parent works too.
    dataset = import_dataset("movielens", tmp_path, tmp_path / "out")
    items = dataset.items.set_index("item_id")
    assert items.loc["2", "title"] == "Misérables, Les (1995)"
    assert items.loc["1", "text"] == "Genres: Animation, Comedy"
    assert items.loc["2", "text"] == "Genres: Drama"
    assert len(dataset.interactions) == 3
    assert dataset.interactions["rating"].tolist() == [5.0, 3.0, 4.0]
    _check_canonical(tmp_path / "out")


def test_movielens_1m_layout(tmp_path: Path) -> None:
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Misérables, Les (1995)::Drama|Musical\n"
        "3::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    )
    (root / "movies.dat").write_bytes(movies.encode("iso-8859-1"))
    (root / "tags.dat").write_text(
        "1::661::Victor Hugo::1\n2::661::victor hugo::2\n3::661::musical::3\n4::661::stage::4\n"
    )
    dataset = import_dataset("movielens", root, tmp_path / "out")
    items = dataset.items.set_index("item_id")
    assert items.loc["661", "title"] == "Misérables, Les (1995)"
    assert items.loc["3", "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    # Tags deduplicated case-insensitively, most frequent first; the duplicate rating dropped.
    assert items.loc["661", "text"] == "Genres: Drama, Musical. Tags: Victor Hugo, musical, stage"
    assert len(dataset.interactions) == 3
    _check_canonical(tmp_path / "out")


def test_movielens_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetImportError, match="not a MovieLens folder"):
        import_dataset("movielens", tmp_path / "empty", tmp_path / "out")
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1::5::978300760\n")
    with pytest.raises(DatasetImportError, match=r"movies\.dat"):
        import_dataset("movielens", root, tmp_path / "out")


def test_movielens_garbled_ratings(tmp_path: Path) -> None:
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,yesterday\n")
    (root / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    with pytest.raises(DatasetImportError, match=r"ratings\.csv: column timestamp"):
        import_dataset("movielens", root, tmp_path / "out")


# ----------------------------------------------------------------------------- Amazon layouts


def test_amazon_2018_with_python_literal_metadata(tmp_path: Path) -> None:
    reviews = [
        {"overall": 5.0, "vote": "1,024", "verified": True, "reviewTime": "01 2, 2018",
         "reviewerID": "U1", "asin": "A1", "style": {"Size:": " Large"},
         "reviewText": "Warm &amp; soft.", "summary": "Great", "unixReviewTime": 1514851200},
        {"overall": 3.0, "reviewerID": "U2", "asin": "A2", "summary": "ok",
         "unixReviewTime": 1514851300},  # 2018 files may lack reviewText
        {"overall": 3.0, "reviewerID": "U2", "asin": "A2", "summary": "ok",
         "unixReviewTime": 1514851300},  # exact duplicate event
    ]  # fmt: skip
    with gzip.open(tmp_path / "Clothing_5.json.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in reviews)
    meta = [
        "{'asin': 'A1', 'title': 'Wool Scarf', 'description': 'A <b>wool</b> scarf.', "
        "'brand': 'Knitco', 'categories': [['Clothing', 'Scarves'], ['Clothing']]}",
        "{'asin': 'ZZ', 'title': 'Not reviewed'}",
    ]
    (tmp_path / "meta_Clothing.json").write_text("\n".join(meta) + "\n")
    dataset = import_dataset("amazon-reviews", tmp_path, tmp_path / "out")
    items = dataset.items.set_index("item_id")
    assert list(items.index) == ["A1", "A2"]
    assert items.loc["A1", "title"] == "Wool Scarf"
    assert items.loc["A1", "text"] == "A wool scarf. Brand: Knitco. Categories: Clothing, Scarves"
    assert items.loc["A2", "title"] == "" and items.loc["A2", "text"] == "ok"
    assert len(dataset.interactions) == 2
    assert set(dataset.interactions["event"]) == {"review"}
    _check_canonical(tmp_path / "out")


def test_amazon_review_text_order_and_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reviews = [
        {"reviewerID": f"U{i}", "asin": "A", "overall": 4.0, "unixReviewTime": 100 + i,
         "helpful": [votes, 20], "summary": f"Summary {i}", "reviewText": "Same body words."}
        for i, votes in enumerate([0, 9, 3])
    ]  # fmt: skip
    path = tmp_path / "reviews.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    monkeypatch.setattr(importers, "MAX_REVIEW_CHARS", 60)
    dataset = import_dataset("amazon-reviews", path, tmp_path / "out")
    text = dataset.items["text"].iloc[0]
    assert text.startswith("Summary 1. Same body words. Summary 2.")  # most helpful first
    assert len(text) <= 60


def test_amazon_garbled_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "reviews.json"
    good = {"reviewerID": "U", "asin": "A", "overall": 4.0, "unixReviewTime": 1}
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DatasetImportError, match=r"reviews\.json: line 2 is not a JSON object"):
        import_dataset("amazon-reviews", path, tmp_path / "out")
    path.write_text(json.dumps({"asin": "A", "overall": 4.0}) + "\n")
    with pytest.raises(DatasetImportError, match=r"line 1 lacks reviewerID, unixReviewTime"):
        import_dataset("amazon-reviews", path, tmp_path / "out")


# ----------------------------------------------------------------------------- canonical


def test_canonical_csv_with_timestamps_and_extras(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2"],
            "item_id": ["10", "11", "11", "10"],
            "timestamp": [5, 6, 6, 7],
            "rating": [1, 2, 2, 3],
        }
    ).to_csv(src / "interactions.csv", index=False)
    pd.DataFrame(
        {"item_id": ["10", "11"], "title": ["A &amp; B", "C"], "text": ["x<br/>y", ""],
         "price": ["1.5", ""]}
    ).to_csv(src / "items.csv", index=False)  # fmt: skip
    dataset = import_dataset("canonical", src, tmp_path / "out")
    assert len(dataset.interactions) == 3  # exact duplicate dropped
    assert dataset.interactions["rating"].dtype == "float64"
    assert dataset.items["title"].tolist() == ["A & B", "C"]
    assert dataset.items["text"].tolist() == ["x y", ""]
    assert dataset.items["price"].tolist() == ["1.5", ""]
    _check_canonical(tmp_path / "out")


def test_canonical_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(DatasetImportError, match=r"no interactions\.parquet or interactions\.csv"):
        import_dataset("canonical", src, tmp_path / "out")
    (src / "interactions.csv").write_text("user,item_id,timestamp\n1,2,3\n")
    (src / "items.csv").write_text("item_id,title\n2,x\n")
    with pytest.raises(DatasetImportError, match=r"interactions\.csv: missing column\(s\) user_id"):
        import_dataset("canonical", src, tmp_path / "out")
    (src / "interactions.csv").write_text("user_id,item_id,timestamp\n1,2,3\n1,9,4\n")
    with pytest.raises(DatasetImportError, match=r"1 interacted item id\(s\) missing .*'9'"):
        import_dataset("canonical", src, tmp_path / "out")
    (src / "interactions.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetImportError, match="not a readable Parquet file"):
        import_dataset("canonical", src, tmp_path / "out")


def test_unknown_format_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetImportError, match="unknown format 'netflix'"):
        import_dataset("netflix", tmp_path, tmp_path / "out")
    with pytest.raises(DatasetImportError, match="no such file or directory"):
        import_dataset("movielens", tmp_path / "nope", tmp_path / "out")
