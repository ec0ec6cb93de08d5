"""Item text cleaning: turn scraped catalogue text into what the text encoder should read.

Published catalogues are messy: HTML entities escaped two or three times (``&amp;amp;lt;``), markup
(``<br />``, ``<a href=...>``), Microsoft Word conditional blocks pasted into product descriptions,
control characters, and descriptions pasted twice. Everything here is a pure function of its input
so it can be tested without Prefect; ``tasks.clean_text`` is the stage's thin wrapper.
"""

from __future__ import annotations

import html
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from recloop.config import TextConfig

logger = logging.getLogger(__name__)

# Word/Outlook "conditional comments" and embedded XML/CSS: their content is never product text.
_CONDITIONAL_BLOCK = re.compile(r"\[if [^\]]*\]>.*?<!\[endif\]", re.IGNORECASE | re.DOTALL)
_STRAY_CONDITIONAL = re.compile(r"<!?\[(?:if [^\]]*|endif)\]>?", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_DROP_ELEMENT = re.compile(
    r"<(style|script|xml|head)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
# Tags that separate blocks of text; replaced by a space so words on either side do not merge.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:_-]*(?:\s[^<>]*)?/?>|<![A-Za-z][^<>]*>")
# Tags that lost their "<" in scraping (">/p>", " b>What", " li>Available"): common names only.
_BROKEN_TAG = re.compile(
    r"(?<![\w<])>?/?(?:p|b|i|u|br|li|ul|ol|em|strong|span|div|h[1-6])\s*/?>(?=\s|[A-Z]|$)"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_WHITESPACE = re.compile(r"\s+")
# A sentence ends at . ! or ? followed by whitespace, or glued to a capital letter after a lowercase
# word ("...your seat.Is your..."), which is how pasted-twice descriptions usually join.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[a-z][.!?])(?=[A-Z][a-z])")
_TRAILING = re.compile(r"[\s.!?;:,]+$")


def unescape_html(text: str, max_rounds: int = 5) -> str:
    """Undo HTML escaping until the text stops changing (``&amp;quot;`` -> ``"``)."""
    for _ in range(max_rounds):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return text


def strip_markup(text: str) -> str:
    """Remove HTML/XML tags, comments, and style/script/Word-XML blocks, keeping the words."""
    text = _CONDITIONAL_BLOCK.sub(" ", text)
    text = _COMMENT.sub(" ", text)
    text = _DROP_ELEMENT.sub(" ", text)
    text = _STRAY_CONDITIONAL.sub(" ", text)
    text = _TAG.sub(" ", text)
    return _BROKEN_TAG.sub(" ", text)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (a simple rule: punctuation then space or a capital)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def drop_repeated_sentences(text: str) -> str:
    """Keep the first occurrence of each sentence, compared case-insensitively without end marks."""
    seen: set[str] = set()
    kept: list[str] = []
    for sentence in split_sentences(text):
        key = _TRAILING.sub("", sentence).casefold()
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(sentence)
    return " ".join(kept)


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The first ``max_tokens`` whitespace tokens of ``text``; all of it when ``max_tokens`` < 1."""
    if max_tokens <= 0:
        return text
    tokens = text.split()
    return " ".join(tokens[:max_tokens])


def clean_text(text: Any, max_tokens: int) -> str:
    """One item text, cleaned for the encoder.

    NFKC normalisation, repeated HTML unescaping, markup removal, control characters dropped,
    whitespace collapsed, repeated sentences removed, then capped at ``max_tokens`` whitespace
    tokens. ``None``/NaN give ``""``.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    text = unescape_html(str(text))
    # Normalise after unescaping: entities such as &nbsp; and &#65279; decode to characters NFKC
    # and the control filter know about.
    text = unicodedata.normalize("NFKC", text)
    text = strip_markup(text)
    text = _CONTROL.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = drop_repeated_sentences(text)
    return truncate_tokens(text, max_tokens)


def _flatten(value: Any) -> list[str]:
    """Strings inside a metadata value (Amazon categories are lists of lists)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _flatten(v)]
    if isinstance(value, Iterable):
        return [s for v in value for s in _flatten(v)]
    text = str(value).strip()
    return [text] if text else []


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for value in values:
        key = value.casefold()
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _join_parts(parts: Iterable[str]) -> str:
    out = ""
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if out:
            out += " " if out[-1] in ".!?" else ". "
        out += part
    return out


def build_item_text(title: Any, text: Any, metadata: Mapping[str, Any] | None = None) -> str:
    """Assemble ``"Title. Text. Brand: X. Categories: a, b"``, skipping empty parts.

    The title is left out when the text already starts with it (many descriptions repeat the
    product name). Each metadata entry becomes ``"Key: v1, v2"``; list values are flattened and
    deduplicated case-insensitively (Amazon categories are lists of category paths).
    """
    title_s = " ".join(_flatten(title))
    text_s = " ".join(_flatten(text))
    parts: list[str] = []
    if title_s and not text_s.casefold().startswith(title_s.casefold()):
        parts.append(title_s)
    parts.append(text_s)
    for key, value in (metadata or {}).items():
        values = _unique(_flatten(value))
        if values:
            label = str(key).replace("_", " ").strip().capitalize()
            parts.append(f"{label}: {', '.join(values)}")
    return _join_parts(parts)


def clean_catalogue(items: pd.DataFrame, config: TextConfig) -> pd.DataFrame:
    """A copy of ``items`` with ``clean_text``: title and text assembled, cleaned and capped.

    This is what the encoder embeds. The title is cleaned with the same rules so duplicated-title
    detection compares like with like.
    """
    out = items.copy()
    titles = out["title"] if "title" in out else pd.Series([""] * len(out), index=out.index)
    texts = out["text"] if "text" in out else pd.Series([""] * len(out), index=out.index)
    out["clean_text"] = [
        clean_text(build_item_text(clean_text(title, 0), clean_text(text, 0)), config.max_tokens)
        for title, text in zip(titles, texts, strict=True)
    ]
    empty = int((out["clean_text"] == "").sum())
    if empty:
        logger.warning("%d of %d items have no text after cleaning", empty, len(out))
    return out


def catalogue_texts(catalogue: pd.DataFrame) -> list[str]:
    """The text each item is embedded from: ``clean_text`` when present, else title + text."""
    if "clean_text" in catalogue:
        return catalogue["clean_text"].fillna("").astype(str).tolist()
    title = catalogue["title"].fillna("").astype(str) if "title" in catalogue else ""
    text = catalogue["text"].fillna("").astype(str) if "text" in catalogue else ""
    return (title + " " + text).str.strip().tolist()
