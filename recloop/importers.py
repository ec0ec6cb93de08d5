"""Importers: published datasets -> the canonical form (docs/interfaces.md).

``import_dataset(fmt, src, dest)`` reads one of

- ``movielens``: 100K (``u.data``/``u.item``), 1M/10M (``*.dat`` with ``::``), or latest/20M/25M
  (``ratings.csv``, ``movies.csv``, ``tags.csv``). Item text = genres plus the users' tags; tags are
  text, not interactions.
- ``amazon-reviews``: McAuley's 2014 or 2018 JSON-lines reviews, optionally with a metadata file.
  Without metadata an item's text is built from its own reviews.
- ``canonical``: CSV/Parquet already in (or close to) the canonical form; ``position`` is accepted
  in place of ``timestamp`` for sources that only know the order of events.

and writes ``items.parquet`` and ``interactions.parquet`` to ``dest``. Texts are cleaned
(:func:`recloop.text.clean_text`) but not capped in tokens here: the cap belongs to the
catalogue cleaning step, so a different ``text.max_tokens`` never needs a re-import.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recloop.data import Dataset, normalise_interactions, normalise_items, write_dataset
from recloop.text import build_item_text, clean_text

logger = logging.getLogger(__name__)

FORMATS = ("movielens", "amazon-reviews", "canonical")

# The genre list of MovieLens 100K (u.genre), in flag order; used when u.genre is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
MAX_TAGS = 20  # user tags kept per movie, most frequent first
# Cap on the text built from an item's own reviews (an Amazon item without metadata), in
# characters: the encoder reads at most EncoderConfig.max_length tokens of it anyway.
MAX_REVIEW_CHARS = 2000


class DatasetImportError(ValueError):
    """A source file is missing or cannot be read; the message names the file."""


def import_dataset(
    fmt: str,
    src: str | Path,
    dest: str | Path,
    *,
    meta: str | Path | None = None,
) -> Dataset:
    """Convert the dataset at ``src`` (format ``fmt``) to canonical Parquet under ``dest``.

    ``meta`` is an optional metadata file for ``amazon-reviews`` (default: a ``meta_*.json[.gz]``
    beside the reviews). Exact duplicate events are dropped. Raises :class:`DatasetImportError`
    with a one-line reason naming the file when the input is missing or garbled.
    """
    src = Path(src)
    if not src.exists():
        raise DatasetImportError(f"{src}: no such file or directory")
    if fmt == "movielens":
        items, interactions = _read_movielens(src)
    elif fmt == "amazon-reviews":
        items, interactions = _read_amazon(src, Path(meta) if meta else None)
    elif fmt == "canonical":
        items, interactions = _read_canonical(src)
    else:
        raise DatasetImportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    dataset = _finish(items, interactions, src)
    write_dataset(dataset, dest)
    logger.info("imported %s from %s to %s: %s", fmt, src, dest, dataset.summary())
    return dataset


# --------------------------------------------------------------------------- shared helpers


def _finish(items: pd.DataFrame, interactions: pd.DataFrame, src: Path) -> Dataset:
    """Canonical dtypes, duplicate events dropped, every interacted item in the catalogue."""
    if interactions.empty:
        raise DatasetImportError(f"{src}: no interactions found")
    items = normalise_items(items)
    duplicated_items = items["item_id"].duplicated(keep="last")
    if duplicated_items.any():
        logger.warning("%s: %d repeated item rows; keeping the last", src, duplicated_items.sum())
        items = items[~duplicated_items].reset_index(drop=True)
    interactions = normalise_interactions(interactions)
    before = len(interactions)
    interactions = interactions.drop_duplicates().reset_index(drop=True)
    if len(interactions) < before:
        logger.info("%s: dropped %d exact duplicate events", src, before - len(interactions))
    unknown = sorted(set(interactions["item_id"]) - set(items["item_id"]))
    if unknown:
        raise DatasetImportError(
            f"{src}: {len(unknown)} interacted item id(s) missing from the items file "
            f"(e.g. {unknown[0]!r})"
        )
    return Dataset(items, interactions)


def _read_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(line number, line) pairs of a text file, gzip-aware; decoding errors name the file."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding=encoding, newline="") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as error:
        raise DatasetImportError(f"{path}: not valid {encoding} text ({error.reason})") from error
    except (OSError, EOFError) as error:
        raise DatasetImportError(f"{path}: cannot read ({error})") from error


def _decode(path: Path, encodings: tuple[str, ...] = ("utf-8", "iso-8859-1")) -> str:
    """A text file's content in the first encoding that decodes it (MovieLens 1M is Latin-1)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetImportError(f"{path}: cannot read ({error})") from error
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DatasetImportError(f"{path}: not valid text in any of {', '.join(encodings)}")


def _read_csv(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` whose failures become one-line :class:`DatasetImportError`."""
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError as error:
        raise DatasetImportError(f"{path}: missing ({what})") from error
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetImportError(f"{path}: cannot parse {what}: {reason}") from error


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        present = ", ".join(map(str, frame.columns))
        raise DatasetImportError(f"{path}: missing column(s) {', '.join(missing)} (has {present})")


def _to_int64(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Integer timestamps; ISO date strings are converted to unix seconds."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric.notna() & (numeric != np.floor(numeric.fillna(0))))
    if not bad.any():
        return numeric.astype("int64")
    if numeric.isna().all():
        # Whole column non-numeric: maybe dates.
        try:
            dates = pd.to_datetime(values, utc=True, errors="raise")
        except (ValueError, TypeError):
            dates = None
        if dates is not None and dates.notna().all():
            return (dates.astype("int64") // 10**9).astype("int64")
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise DatasetImportError(
        f"{path}: column {column} must hold integers; row {row + 2} has {values.iloc[row]!r}"
    )


def _to_float(values: pd.Series, path: Path, column: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetImportError(
            f"{path}: column {column} must be numeric; row {row + 2} has {values.iloc[row]!r}"
        )
    return numeric.astype("float64")


def _locate(src: Path, names: tuple[str, ...]) -> Path | None:
    """The directory (``src`` or one directly below it) that holds the first of ``names``."""
    if src.is_file():
        src = src.parent
    for directory in [src, *sorted(p for p in src.iterdir() if p.is_dir())]:
        if any((directory / name).exists() for name in names):
            return directory
    return None


# --------------------------------------------------------------------------- MovieLens


def _read_movielens(src: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect the MovieLens layout under ``src`` and read it."""
    root = _locate(src, ("u.data", "ratings.dat", "ratings.csv"))
    if root is None:
        raise DatasetImportError(
            f"{src}: not a MovieLens folder (expected u.data, ratings.dat or ratings.csv)"
        )
    if (root / "ratings.csv").exists():
        logger.info("%s: MovieLens latest/20M/25M layout", root)
        items, interactions, tags = _movielens_csv(root)
    elif (root / "ratings.dat").exists():
        logger.info("%s: MovieLens 1M/10M layout", root)
        items, interactions, tags = _movielens_dat(root)
    else:
        logger.info("%s: MovieLens 100K layout", root)
        items, interactions, tags = _movielens_100k(root)
    items = items.copy()
    tag_text = _tags_by_item(tags)
    items["text"] = [
        clean_text(_movie_text(genres, tag_text.get(item_id, [])), 0)
        for item_id, genres in zip(items["item_id"], items["genres"], strict=True)
    ]
    items["title"] = [clean_text(title, 0) for title in items["title"]]
    items["genres"] = ["|".join(g) for g in items["genres"]]
    interactions = interactions.assign(event="rating")
    return items[["item_id", "title", "text", "genres"]], interactions


def _movie_text(genres: list[str], tags: list[str]) -> str:
    parts = []
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts)


def _tags_by_item(tags: pd.DataFrame) -> dict[str, list[str]]:
    """Each movie's tags, deduplicated case-insensitively, most frequent first, capped."""
    out: dict[str, list[str]] = {}
    if tags.empty:
        return out
    for item_id, group in tags.groupby("item_id", sort=False)["tag"]:
        counts: Counter[str] = Counter()
        shown: dict[str, str] = {}  # first spelling seen of each tag
        for tag in group:
            tag = " ".join(str(tag).split())
            if not tag or tag.lower() == "nan":
                continue
            key = tag.casefold()
            shown.setdefault(key, tag)
            counts[key] += 1
        # Counter.most_common keeps first-seen order among equal counts.
        out[str(item_id)] = [shown[key] for key, _ in counts.most_common(MAX_TAGS)]
    return out


def _split_genres(value: Any) -> list[str]:
    if not isinstance(value, str) or value.strip() in {"", "(no genres listed)"}:
        return []
    return [g.strip() for g in value.split("|") if g.strip()]


def _movielens_csv(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings_path = root / "ratings.csv"
    ratings = _read_csv(ratings_path, "ratings", dtype={"userId": str, "movieId": str})
    _require_columns(ratings, ("userId", "movieId", "rating", "timestamp"), ratings_path)
    interactions = pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"],
            "timestamp": _to_int64(ratings["timestamp"], ratings_path, "timestamp"),
            "rating": _to_float(ratings["rating"], ratings_path, "rating"),
        }
    )
    movies_path = root / "movies.csv"
    movies = _read_csv(movies_path, "movies", dtype=str, keep_default_na=False)
    _require_columns(movies, ("movieId", "title", "genres"), movies_path)
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "title": movies["title"],
            "genres": [_split_genres(g) for g in movies["genres"]],
        }
    )
    tags_path = root / "tags.csv"
    tags = pd.DataFrame(columns=["item_id", "tag"])
    if tags_path.exists():
        raw = _read_csv(tags_path, "tags", dtype=str, keep_default_na=False)
        _require_columns(raw, ("movieId", "tag"), tags_path)
        tags = pd.DataFrame({"item_id": raw["movieId"], "tag": raw["tag"]})
    return items, interactions, tags


def _split_dat(path: Path, fields: int) -> list[list[str]]:
    """Rows of a ``::``-separated file; the last field may itself contain ``::``-free text."""
    rows = []
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::", fields - 1)
        if len(parts) != fields:
            raise DatasetImportError(
                f"{path}: line {number} has {len(parts)} '::'-separated fields, expected {fields}"
            )
        rows.append(parts)
    return rows


def _movielens_dat(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings_path = root / "ratings.dat"
    # "::" read as ":" gives empty columns between the fields, which lets the fast C parser read
    # the 10M file; ratings hold no free text, so no field contains ":".
    raw = _read_csv(
        ratings_path, "ratings", sep=":", header=None, usecols=[0, 2, 4, 6], dtype=str,
        engine="c",
    )  # fmt: skip
    raw.columns = ["user_id", "item_id", "rating", "timestamp"]
    if raw.isna().any().any():
        row = int(np.flatnonzero(raw.isna().any(axis=1).to_numpy())[0])
        raise DatasetImportError(f"{ratings_path}: line {row + 1} is not user::item::rating::time")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "timestamp": _to_int64(raw["timestamp"], ratings_path, "timestamp"),
            "rating": _to_float(raw["rating"], ratings_path, "rating"),
        }
    )
    movies_path = root / "movies.dat"
    if not movies_path.exists():
        raise DatasetImportError(f"{movies_path}: missing (movies)")
    movies = _split_dat(movies_path, 3)
    items = pd.DataFrame(
        {
            "item_id": [m[0].strip() for m in movies],
            "title": [m[1] for m in movies],
            "genres": [_split_genres(m[2]) for m in movies],
        }
    )
    tags_path = root / "tags.dat"
    tags = pd.DataFrame(columns=["item_id", "tag"])
    if tags_path.exists():
        rows = _split_dat(tags_path, 4)
        # The tag is the third field; the timestamp after it never contains "::".
        tags = pd.DataFrame({"item_id": [r[1] for r in rows], "tag": [r[2] for r in rows]})
    return items, interactions, tags


def _movielens_100k(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    data_path = root / "u.data"
    raw = _read_csv(
        data_path, "ratings", sep="\t", header=None, dtype=str,
        names=["user_id", "item_id", "rating", "timestamp"],
    )  # fmt: skip
    if raw.isna().any().any():
        row = int(np.flatnonzero(raw.isna().any(axis=1).to_numpy())[0])
        raise DatasetImportError(
            f"{data_path}: line {row + 1} is not user<TAB>item<TAB>rating<TAB>time"
        )
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "timestamp": _to_int64(raw["timestamp"], data_path, "timestamp"),
            "rating": _to_float(raw["rating"], data_path, "rating"),
        }
    )
    genre_names = list(ML100K_GENRES)
    genre_path = root / "u.genre"
    if genre_path.exists():
        pairs = [line.rsplit("|", 1) for line in _decode(genre_path).splitlines() if "|" in line]
        try:
            by_index = {int(index): name for name, index in pairs}
        except ValueError as error:
            raise DatasetImportError(f"{genre_path}: expected name|index lines") from error
        genre_names = [by_index[i] for i in sorted(by_index)]
    item_path = root / "u.item"
    if not item_path.exists():
        raise DatasetImportError(f"{item_path}: missing (movies)")
    ids, titles, genres = [], [], []
    n_genres = len(genre_names)
    for number, line in enumerate(_decode(item_path, ("iso-8859-1",)).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 5 + n_genres:
            raise DatasetImportError(
                f"{item_path}: line {number} has {len(fields)} '|'-separated fields, "
                f"expected {5 + n_genres}"
            )
        flags = fields[-n_genres:]
        ids.append(fields[0].strip())
        titles.append(fields[1])
        genres.append(
            [name for name, flag in zip(genre_names, flags, strict=True) if flag.strip() == "1"]
        )
    items = pd.DataFrame({"item_id": ids, "title": titles, "genres": genres})
    return items, interactions, pd.DataFrame(columns=["item_id", "tag"])


# --------------------------------------------------------------------------- Amazon reviews


def _parse_record(line: str, path: Path, number: int) -> dict[str, Any]:
    """One JSON object per line; 2014 metadata files hold Python literals instead."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
            raise DatasetImportError(f"{path}: line {number} is not a JSON object") from error
    if not isinstance(record, dict):
        raise DatasetImportError(f"{path}: line {number} is not a JSON object")
    return record


def _amazon_files(src: Path, meta: Path | None) -> tuple[Path, Path | None]:
    """The reviews file and the metadata file (given, or ``meta_*`` beside the reviews)."""
    json_suffixes = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
    if src.is_dir():
        found = sorted(p for p in src.iterdir() if p.name.endswith(json_suffixes))
        reviews = [p for p in found if not p.name.startswith("meta")]
        if not reviews:
            raise DatasetImportError(f"{src}: no reviews *.json or *.json.gz file")
        if len(reviews) > 1:
            names = ", ".join(p.name for p in reviews)
            raise DatasetImportError(f"{src}: several review files ({names}); pass one of them")
        reviews_path = reviews[0]
    else:
        reviews_path = src
    if meta is None:
        beside = sorted(
            p for p in reviews_path.parent.iterdir()
            if p.name.startswith("meta") and p.name.endswith(json_suffixes)
        )  # fmt: skip
        meta = beside[0] if len(beside) == 1 else None
        if len(beside) > 1:
            logger.warning("%s: several metadata files; pass one with --meta", reviews_path.parent)
    elif not meta.exists():
        raise DatasetImportError(f"{meta}: no such metadata file")
    return reviews_path, meta


def _votes(record: dict[str, Any]) -> int:
    """Helpful votes: 2014 ``helpful: [up, total]``, 2018 ``vote: "1,234"``."""
    helpful = record.get("helpful")
    if isinstance(helpful, list | tuple) and helpful:
        try:
            return int(helpful[0])
        except (TypeError, ValueError):
            return 0
    vote = record.get("vote")
    if vote is None:
        return 0
    try:
        return int(str(vote).replace(",", ""))
    except ValueError:
        return 0


def _read_amazon(src: Path, meta: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews_path, meta_path = _amazon_files(src, meta)
    users, items, times, ratings = [], [], [], []
    review_texts: dict[str, list[tuple[int, int, Any, Any]]] = {}
    required = ("reviewerID", "asin", "overall", "unixReviewTime")
    for number, line in _read_lines(reviews_path):
        record = _parse_record(line, reviews_path, number)
        missing = [key for key in required if key not in record]
        if missing:
            raise DatasetImportError(
                f"{reviews_path}: line {number} lacks {', '.join(missing)} (not an Amazon review)"
            )
        try:
            timestamp = int(record["unixReviewTime"])
            rating = float(record["overall"])
        except (TypeError, ValueError) as error:
            raise DatasetImportError(
                f"{reviews_path}: line {number} has a non-numeric overall or unixReviewTime"
            ) from error
        asin = str(record["asin"])
        users.append(str(record["reviewerID"]))
        items.append(asin)
        times.append(timestamp)
        ratings.append(rating)
        summary, body = record.get("summary"), record.get("reviewText")
        if summary or body:
            # Kept raw: only the reviews that make it into the capped text get cleaned.
            review_texts.setdefault(asin, []).append((_votes(record), timestamp, summary, body))
    interactions = pd.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": times, "rating": ratings}
    ).assign(event="review")
    item_ids = list(dict.fromkeys(items))
    metadata = _read_amazon_meta(meta_path, set(item_ids)) if meta_path else {}
    rows = []
    for asin in item_ids:
        record = metadata.get(asin, {})
        text = _meta_text(record)
        if not text:
            text = _review_text(review_texts.get(asin, []), MAX_REVIEW_CHARS)
        rows.append({"item_id": asin, "title": clean_text(record.get("title"), 0), "text": text})
    if meta_path:
        logger.info("%s: metadata for %d of %d items", meta_path, len(metadata), len(item_ids))
    return pd.DataFrame(rows, columns=["item_id", "title", "text"]), interactions


def _read_amazon_meta(path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Metadata records of the ``wanted`` items only (category files hold millions of products)."""
    out: dict[str, dict[str, Any]] = {}
    for number, line in _read_lines(path):
        # Cheap pre-filter before parsing: the asin must appear in the line.
        match = re.search(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""", line)
        if match and match.group(1) not in wanted:
            continue
        record = _parse_record(line, path, number)
        asin = str(record.get("asin", ""))
        if asin in wanted:
            out[asin] = record
    return out


def _meta_text(record: dict[str, Any]) -> str:
    """Description + brand + categories of one metadata record, cleaned."""
    if not record:
        return ""
    categories = record.get("categories") or record.get("category")
    text = build_item_text(
        "",
        clean_text(record.get("description"), 0),
        {"brand": clean_text(record.get("brand"), 0), "categories": categories},
    )
    return clean_text(text, 0)


def _review_text(reviews: list[tuple[int, int, Any, Any]], max_chars: int) -> str:
    """An item's review summaries and texts, most helpful (then earliest) first, deduplicated.

    Each review reads "Summary. Review text"; the result is cut at a word boundary after
    ``max_chars`` characters.
    """
    seen: set[str] = set()
    kept: list[str] = []
    length = 0
    for _, _, summary, body in sorted(reviews, key=lambda r: (-r[0], r[1])):
        words = build_item_text(clean_text(summary, 0), clean_text(body, 0))
        key = words.casefold()
        if not words or key in seen:
            continue
        seen.add(key)
        kept.append(words)
        length += len(words) + 1
        if length >= max_chars:
            break
    text = clean_text(" ".join(kept), 0)
    if len(text) > max_chars:
        # Cut at a word boundary so the encoder never sees half a word.
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


# --------------------------------------------------------------------------- canonical

# Item columns assembled into ``text`` when a canonical items file has none.
_TEXT_SOURCES = ("description", "brand", "categories", "category", "genres")


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise DatasetImportError(f"{path}: not a readable Parquet file ({error})") from error
    return _read_csv(path, path.stem, dtype=str, keep_default_na=False, na_values=[""])


def _find(src: Path, stem: str) -> Path:
    directory = src if src.is_dir() else src.parent
    for suffix in (".parquet", ".csv"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise DatasetImportError(f"{directory}: no {stem}.parquet or {stem}.csv")


def _read_canonical(src: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions_path = _find(src, "interactions")
    raw = _read_table(interactions_path)
    if "timestamp" not in raw.columns and "position" in raw.columns:
        # Sources with order only (e.g. Amazon 5-core sequences): the position is the time.
        raw = raw.rename(columns={"position": "timestamp"})
    _require_columns(raw, ("user_id", "item_id", "timestamp"), interactions_path)
    for column in ("user_id", "item_id"):
        if raw[column].isna().any():
            row = int(np.flatnonzero(raw[column].isna().to_numpy())[0])
            raise DatasetImportError(f"{interactions_path}: row {row + 2} has no {column}")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "timestamp": _to_int64(raw["timestamp"], interactions_path, "timestamp"),
        }
    )
    if "rating" in raw.columns:
        interactions["rating"] = _to_float(raw["rating"], interactions_path, "rating")
    if "event" in raw.columns:
        interactions["event"] = raw["event"].fillna("").astype(str)

    items_path = _find(src, "items")
    items = _read_table(items_path)
    _require_columns(items, ("item_id",), items_path)
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str)
    items["title"] = [clean_text(t, 0) for t in items.get("title", pd.Series([""] * len(items)))]
    if "text" in items.columns:
        items["text"] = [clean_text(t, 0) for t in items["text"]]
    else:
        sources = [c for c in _TEXT_SOURCES if c in items.columns]
        items["text"] = [
            clean_text(
                build_item_text(
                    "",
                    clean_text(row.get("description"), 0),
                    {c: clean_text(row.get(c), 0) for c in sources if c != "description"},
                ),
                0,
            )
            for row in items[sources].to_dict("records")
        ]
    # Metadata columns stay, as strings, so the Parquet schema is stable across imports.
    for column in items.columns:
        is_text = pd.api.types.is_object_dtype(items[column]) or pd.api.types.is_string_dtype(
            items[column]
        )
        if column not in ("item_id", "title", "text") and is_text:
            items[column] = items[column].fillna("").astype(str)
    return items, interactions


__all__ = ["FORMATS", "DatasetImportError", "import_dataset"]
