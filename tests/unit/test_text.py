"""Text cleaning on ugly strings taken from the real datasets (amazon-office-2014, instruments)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recloop.config import TextConfig
from recloop.text import (
    build_item_text,
    clean_catalogue,
    clean_text,
    drop_repeated_sentences,
    unescape_html,
)
from tasks.clean_text import clean_text_task

pytestmark = pytest.mark.unit

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

# Excerpt of amazon-office-2014 item 1548's description: a Word document pasted into the page,
# its comment escaped three times.
WORD_PASTE = (
    "Canon Pro9000 MarkII Inkjet Photo Printer[if gte mso 9]><xml> <w:WordDocument> "
    "<w:View>Normal</w:View> <w:Zoom>0</w:Zoom> <w:TrackMoves  /> <m:brkBinSub "
    'm:val="&#45;-"  /> </w:WordDocument> </xml><![endif]&amp;amp;lt;!-- /* Font Definitions */ '
    '@font-face {font-family:"Cambria Math"; mso-font-charset:0;} --&amp;amp;gt;[if gte mso 10]> '
    '<style> /* Style Definitions */ table.MsoNormalTable {mso-style-name:"Table Normal";} '
    "</style> <![endif]Ambient Light Correction optimizes color output"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # instruments reviews: numeric entities
        ("Excellent 1/4&#34; plugs.", 'Excellent 1/4" plugs.'),
        ("I&#8217;ve used strap locks before", "I\u2019ve used strap locks before"),
        ("a budget target of &#60;$125, but", "a budget target of <$125, but"),
        # office titles: named entities
        (
            "Satechi Desk Mat &amp; Mate 24&quot; x 14&quot; Desk Pad",
            'Satechi Desk Mat & Mate 24" x 14" Desk Pad',
        ),
        (
            "For Monitors Up to 20 lbs and &lt;= 30 in, Silver",
            "For Monitors Up to 20 lbs and <= 30 in, Silver",
        ),
        # &nbsp; decodes to U+00A0, which NFKC turns into a plain space, then collapsed
        ("Disappears on Most Gift Wrap.&nbsp;3 Rolls", "Disappears on Most Gift Wrap. 3 Rolls"),
        # tags that lost their "<" in scraping
        (
            "to provide a lasting hold.>/p>Scotch&#xAE; Printed Message Box",
            "to provide a lasting hold. Scotch® Printed Message Box",
        ),
        (
            "b>What are the benefits of Panasonic DECT 6.0",
            "What are the benefits of Panasonic DECT 6.0",
        ),
        # instruments reviewerName: SUB control characters
        ("\u001a\u001a\u001a \u001a\u001a good strings", "good strings"),
        # doubly escaped quote
        ("the &amp;quot;snobs&amp;quot; say", 'the "snobs" say'),
        # markup as in Amazon 2018 review texts
        ("Great tone.<br /><br />Would buy again", "Great tone. Would buy again"),
        (
            'See <a href="http://www.amazon.com/dp/B0002E1G5C">this strap</a> too',
            "See this strap too",
        ),
        # NFKC: ligatures and full-width characters
        ("\ufb01ne \uff21\uff22\uff23 strings", "fine ABC strings"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_clean_text_real_strings(raw: object, expected: str) -> None:
    assert clean_text(raw, max_tokens=0) == expected


def test_word_paste_is_removed() -> None:
    cleaned = clean_text(WORD_PASTE, max_tokens=0)
    assert cleaned == (
        "Canon Pro9000 MarkII Inkjet Photo Printer Ambient Light Correction optimizes color output"
    )


def test_unescape_is_repeated_until_stable() -> None:
    assert unescape_html("&amp;amp;lt;!--") == "<!--"
    assert unescape_html("plain") == "plain"


def test_repeated_sentences_removed_case_insensitively() -> None:
    # amazon-office-2014 item 217: the whole description was pasted twice, glued at "Seat.Is".
    text = (
        "Is your seating, zenful. Zenergy has an aura that says: Be One With Your Seat."
        "Is your seating, zenful. ZENERGY HAS AN AURA THAT SAYS: BE ONE WITH YOUR SEAT!"
    )
    assert drop_repeated_sentences(text) == (
        "Is your seating, zenful. Zenergy has an aura that says: Be One With Your Seat."
    )


def test_numbers_and_abbreviations_are_not_split() -> None:
    text = "Version 2.1 protocol. Amazon.com Product Description."
    assert drop_repeated_sentences(text) == text


def test_token_cap_and_whitespace() -> None:
    assert clean_text("  one\ttwo\n\nthree   four five ", max_tokens=3) == "one two three"
    assert clean_text("one two", max_tokens=0) == "one two"


def test_build_item_text_assembles_and_skips_empties() -> None:
    text = build_item_text(
        "AT&T 210 Corded Phone",
        "A popular and affordable telephone.",
        {"brand": "AT&T", "categories": [["Office Electronics", "Telephones"], ["Telephones"]]},
    )
    assert text == (
        "AT&T 210 Corded Phone. A popular and affordable telephone. Brand: AT&T. "
        "Categories: Office Electronics, Telephones"
    )
    assert build_item_text("", "", {"brand": "", "categories": None}) == ""
    assert build_item_text("Title", "", {}) == "Title"


def test_build_item_text_does_not_repeat_the_title() -> None:
    title = "Safco Products Zenergy Ball Chair"
    assert build_item_text(title, f"{title} with a pump.", {}) == f"{title} with a pump."


def test_clean_catalogue_adds_clean_text() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["33", "2"],
            "title": ["Satechi Desk Mat &amp; Mate", "AT&amp;T 210 Corded Phone"],
            "text": ["Protects your desk.<br />Protects your desk.", ""],
        }
    )
    out = clean_catalogue(items, TextConfig(max_tokens=6))
    assert list(out["clean_text"]) == [
        "Satechi Desk Mat & Mate. Protects",
        "AT&T 210 Corded Phone",
    ]
    assert "clean_text" not in items  # the input is not modified


def test_clean_text_task_wraps_clean_catalogue() -> None:
    items = pd.DataFrame({"item_id": ["1"], "title": ["Toy Story (1995)"], "text": ["Genres: x"]})
    assert clean_text_task.name == "clean_text"
    out = clean_text_task.fn(items, TextConfig())
    assert out["clean_text"].iloc[0] == "Toy Story (1995). Genres: x"


def test_office_catalogue_is_clean() -> None:
    path = DATASETS / "amazon-office-2014" / "items.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    items = pd.read_csv(path, dtype=str, keep_default_na=False).rename(
        columns={"description": "text"}
    )
    out = clean_catalogue(items, TextConfig(max_tokens=128))
    texts = out["clean_text"]
    assert not texts.str.contains(r"&(?:amp|quot|lt|gt|nbsp|#\d+);", regex=True).any()
    assert not texts.str.contains(r"</?[A-Za-z][^<>]*>", regex=True).any()
    assert not texts.str.contains("mso-", regex=False).any()
    assert texts.str.split().str.len().max() <= 128
    zen = out.loc[out["item_id"] == "217", "clean_text"].iloc[0]
    assert zen.count("Is your seating, zenful") == 1
