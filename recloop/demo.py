"""The embedded demo data: a seeded simulator of a shop whose users behave sequentially.

``recloop run`` with no ``--data`` replays this. The simulator is small enough to run in about a
second and is built so that each part of the loop has something to learn:

- **Text reveals topic.** 18 topics ("cast iron cookware", "trail running", "jazz vinyl", ...);
  every item's title and description are written from its topic's vocabulary, so a text encoder
  can place an item it has never seen interacted with.
- **Sequential structure.** Within a topic, items come in *series* (a beginner-to-expert
  progression, "Stage I, II, III ..."). Users who take one step of a series often take the next
  one, and items have fixed "bought together" companions: the next item is predictable from the
  last, which is what an item-to-item or sequential model exploits and popularity cannot.
- **Drift and freshness.** Each user's topic mix shifts from one mixture to another over their
  active period; items are released over the six months and fresh items are preferred, so a model
  that is not updated falls behind.

Everything random comes from one ``numpy.random.Generator`` seeded by ``seed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recloop.data import Dataset, normalise_interactions, normalise_items

logger = logging.getLogger(__name__)

START = 1_704_067_200  # 2024-01-01T00:00:00Z
DAY = 86_400


@dataclass(frozen=True)
class Topic:
    """Vocabulary of one catalogue topic."""

    name: str
    nouns: tuple[str, ...]  # product kinds within the topic
    features: tuple[str, ...]  # attribute phrases used in descriptions
    uses: tuple[str, ...]  # "for ..." phrases
    brands: tuple[str, ...]  # series (product line) names


TOPICS: tuple[Topic, ...] = (
    Topic(
        "cast iron cookware",
        ("cast iron skillet", "dutch oven", "griddle pan", "grill press", "cornbread pan"),
        (
            "pre-seasoned surface",
            "pour spouts",
            "helper handle",
            "even heat retention",
            "flaxseed oil seasoning",
            "oven-safe to 500F",
        ),
        ("searing steaks", "campfire cooking", "baking cornbread", "slow braises"),
        ("Ironhearth", "Blackforge", "Lodgepole", "Emberline"),
    ),
    Topic(
        "trail running",
        ("trail running shoe", "hydration vest", "running pole", "gaiter", "headlamp"),
        (
            "aggressive lugs",
            "rock plate",
            "breathable mesh upper",
            "soft flasks",
            "reflective trim",
            "quick-lace system",
        ),
        ("muddy singletrack", "ultra distances", "mountain races", "night runs"),
        ("Ridgeline", "Switchback", "Talus", "Cairn"),
    ),
    Topic(
        "jazz vinyl",
        ("jazz LP", "bebop reissue", "live club recording", "hard bop album", "box set"),
        (
            "180-gram pressing",
            "remastered from the original tapes",
            "gatefold sleeve",
            "liner notes",
            "mono mix",
            "saxophone quartet",
        ),
        ("late-night listening", "record collectors", "turntable owners", "swing fans"),
        ("Blue Lantern", "Cellar Door", "Midnight Session", "Half Note"),
    ),
    Topic(
        "sourdough baking",
        ("sourdough starter kit", "banneton basket", "bread lame", "dough whisk", "baking stone"),
        (
            "rattan proofing",
            "wild yeast culture",
            "open crumb",
            "high-hydration dough",
            "rye flour blend",
            "steam baking",
        ),
        ("crusty loaves", "weekend bakers", "country boules", "focaccia"),
        ("Crumbworks", "Levain & Co", "Hearthloaf", "Proofing Room"),
    ),
    Topic(
        "indoor houseplants",
        ("monstera plant", "pothos cutting", "ceramic planter", "grow light", "potting mix"),
        (
            "bright indirect light",
            "drainage hole",
            "air-purifying leaves",
            "chunky aroid soil",
            "self-watering reservoir",
            "variegated foliage",
        ),
        ("apartment jungles", "low-light corners", "beginner plant parents", "propagation"),
        ("Greenleaf", "Canopy", "Fernhouse", "Sprout Lab"),
    ),
    Topic(
        "mechanical keyboards",
        ("mechanical keyboard", "keycap set", "linear switch pack", "coiled cable", "wrist rest"),
        (
            "hot-swappable sockets",
            "PBT doubleshot legends",
            "gasket mount",
            "lubed stabilizers",
            "tenkeyless layout",
            "aluminium case",
        ),
        ("typing enthusiasts", "programmers", "gaming setups", "custom builds"),
        ("Keystone", "Clackworks", "Switchyard", "Thock"),
    ),
    Topic(
        "watercolor painting",
        ("watercolor paint set", "sable brush", "cold-press paper pad", "palette", "masking fluid"),
        (
            "artist-grade pigments",
            "lightfast colors",
            "granulating washes",
            "100% cotton paper",
            "round and flat brushes",
            "wet-on-wet blending",
        ),
        ("botanical studies", "plein air sketching", "landscape washes", "urban sketching"),
        ("Aquarelle", "Wetedge", "Pigment Row", "Bloomwash"),
    ),
    Topic(
        "road cycling",
        ("road bike saddle", "clipless pedals", "cycling jersey", "bike computer", "bar tape"),
        (
            "carbon rails",
            "aero fit",
            "power meter pairing",
            "chamois padding",
            "tubeless-ready rims",
            "GPS navigation",
        ),
        ("century rides", "criterium racing", "climbing days", "group rides"),
        ("Peloton", "Cadence", "Domestique", "Echelon"),
    ),
    Topic(
        "specialty coffee",
        (
            "single-origin beans",
            "burr grinder",
            "pour-over dripper",
            "gooseneck kettle",
            "espresso tamper",
        ),
        (
            "light roast",
            "washed Ethiopian lot",
            "conical burrs",
            "bloom and pour",
            "tasting notes of citrus",
            "temperature control",
        ),
        ("morning pour-overs", "home baristas", "espresso dialing", "cold brew"),
        ("Origin Roasters", "Bloom", "Crema Lab", "Third Wave"),
    ),
    Topic(
        "board games",
        (
            "strategy board game",
            "card drafting game",
            "co-op campaign",
            "expansion pack",
            "dice tower",
        ),
        (
            "worker placement",
            "engine building",
            "legacy campaign",
            "solo mode",
            "2-4 players",
            "90-minute playtime",
        ),
        ("game nights", "family tables", "solo players", "competitive groups"),
        ("Meeple Forge", "Tabletop Union", "Dicebound", "Gambit"),
    ),
    Topic(
        "camping gear",
        ("backpacking tent", "sleeping bag", "camp stove", "trekking backpack", "sleeping pad"),
        (
            "ultralight fabric",
            "three-season rating",
            "waterproof seams",
            "down insulation",
            "packs small",
            "freestanding poles",
        ),
        ("backcountry trips", "car camping", "thru-hikes", "alpine nights"),
        ("Basecamp", "Timberline", "Northfork", "Summit Trail"),
    ),
    Topic(
        "yoga practice",
        ("yoga mat", "cork block", "meditation cushion", "stretch strap", "yoga wheel"),
        (
            "non-slip grip",
            "natural rubber",
            "alignment lines",
            "buckwheat fill",
            "extra thick padding",
            "eco-friendly materials",
        ),
        ("vinyasa flow", "restorative sessions", "daily meditation", "hot yoga"),
        ("Lotus", "Stillpoint", "Prana Works", "Asana Studio"),
    ),
    Topic(
        "film photography",
        (
            "35mm film camera",
            "color negative film",
            "medium format back",
            "light meter",
            "developing tank",
        ),
        (
            "manual focus lens",
            "fine grain",
            "ISO 400 film stock",
            "rangefinder focusing",
            "black and white chemistry",
            "mechanical shutter",
        ),
        ("street photography", "darkroom printing", "portraits", "travel snapshots"),
        ("Silverhalide", "Darkroom", "Grainline", "Aperture"),
    ),
    Topic(
        "fantasy novels",
        (
            "epic fantasy novel",
            "paperback trilogy",
            "hardcover edition",
            "audiobook",
            "illustrated companion",
        ),
        (
            "dragons and prophecy",
            "intricate magic system",
            "sprawling world map",
            "morally grey heroes",
            "page-turning battles",
            "found family",
        ),
        ("long reads", "book clubs", "series bingers", "young adult readers"),
        ("Shadowmere", "The Ember Crown", "Wyrmwood", "Starfall"),
    ),
    Topic(
        "aquarium fishkeeping",
        (
            "planted aquarium tank",
            "canister filter",
            "aquarium heater",
            "betta fish food",
            "water test kit",
        ),
        (
            "nitrogen cycle",
            "live plants",
            "adjustable temperature",
            "biological media",
            "freshwater community",
            "low-flow output",
        ),
        ("nano tanks", "planted aquascapes", "tropical fish", "shrimp colonies"),
        ("Reefside", "Aquascape", "Clearwater", "Tidepool"),
    ),
    Topic(
        "woodworking tools",
        ("hand plane", "chisel set", "japanese pull saw", "marking gauge", "sharpening stone"),
        (
            "hardened steel blade",
            "hardwood handle",
            "dovetail joinery",
            "fine-grit whetstone",
            "precision ground sole",
            "flush cuts",
        ),
        ("furniture making", "weekend shop projects", "joinery practice", "restoring tools"),
        ("Oak & Iron", "Benchcraft", "Timbersmith", "Dovetail"),
    ),
    Topic(
        "knitting yarn",
        (
            "merino wool yarn",
            "circular needles",
            "sock yarn",
            "knitting pattern book",
            "stitch markers",
        ),
        (
            "superwash merino",
            "hand-dyed colorway",
            "worsted weight",
            "fingering weight",
            "cable stitches",
            "soft alpaca blend",
        ),
        ("cozy sweaters", "colorwork hats", "first-time knitters", "gift scarves"),
        ("Woolgather", "Purl & Loop", "Skein House", "Fiber Fox"),
    ),
    Topic(
        "birdwatching optics",
        ("birding binoculars", "spotting scope", "field guide", "bird feeder", "tripod adapter"),
        (
            "8x42 magnification",
            "ED glass",
            "waterproof fog-proof body",
            "close focus",
            "range of regional species",
            "wide field of view",
        ),
        ("backyard birding", "shorebird trips", "spring migration", "nature walks"),
        ("Kestrel", "Warbler", "Skylark", "Osprey"),
    ),
)

LEVELS = ("beginner", "starter", "intermediate", "advanced", "expert", "master", "pro")
EDITIONS = ("", "Classic ", "Select ", "Signature ", "Heritage ")  # product lines of one brand
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")


def simulate(
    seed: int = 7,
    n_users: int = 600,
    n_items: int = 800,
    events_per_user: float = 55.0,
    days: int = 182,
    p_series: float = 0.4,
    p_companion: float = 0.15,
) -> Dataset:
    """A seeded demo dataset (canonical form): a catalogue with text and time-ordered interactions.

    Args:
        seed: seeds every random choice; the same seed gives the same dataset.
        n_users: users; each has at least 5 events.
        n_items: catalogue size (items are released over the period).
        events_per_user: mean events per user (lognormal spread).
        days: length of the simulated period; timestamps are unix seconds from 2024-01-01.
        p_series: chance the next event continues the series of the last item (when possible).
        p_companion: chance the next event is a "bought together" companion of the last item.

    Items carry metadata columns ``topic``, ``series``, ``step`` and ``released_at`` (unix seconds;
    before the period start for the launch catalogue), useful for replaying item arrivals.
    """
    rng = np.random.default_rng(seed)
    span = days * DAY
    items = _make_catalogue(rng, n_items, span)
    interactions = _make_interactions(
        rng, items, n_users, events_per_user, span, p_series, p_companion
    )
    logger.info(
        "demo data: %d users, %d items, %d interactions",
        n_users,
        len(items),
        len(interactions),
    )
    return Dataset(normalise_items(items), normalise_interactions(interactions))


def _make_catalogue(rng: np.random.Generator, n_items: int, span: int) -> pd.DataFrame:
    """Items grouped into topic series; a series' steps are released one after another."""
    n_topics = len(TOPICS)
    rows: list[dict[str, object]] = []
    series_index = 0
    while len(rows) < n_items:
        topic_index = series_index % n_topics
        topic = TOPICS[topic_index]
        length = int(min(rng.integers(3, 8), n_items - len(rows)))
        brand = topic.brands[(series_index // n_topics) % len(topic.brands)]
        noun = topic.nouns[int(rng.integers(len(topic.nouns)))]
        # About half the catalogue exists at launch; the rest arrives during the period.
        if rng.random() < 0.5:
            first_release = START - int(rng.integers(30, 365)) * DAY
        else:
            first_release = START + int(rng.uniform(0.0, 0.8) * span)
        gap = int(rng.integers(4, 15)) * DAY
        edition = series_index // (n_topics * len(topic.brands))
        # Title case that keeps acronyms ("LP", "GPS") as they are.
        product = " ".join(word[:1].upper() + word[1:] for word in noun.split())
        name = f"{brand} {EDITIONS[edition % len(EDITIONS)]}{product}"
        for step in range(length):
            features = rng.choice(len(topic.features), size=3, replace=False)
            use = topic.uses[int(rng.integers(len(topic.uses)))]
            level = LEVELS[min(step, len(LEVELS) - 1)]
            feature_text = ", ".join(topic.features[i] for i in features[:2])
            article = "An" if level[0] in "aeiou" else "A"
            text = (
                f"{article} {level}-level {noun} from the {brand} line, made for {use}. "
                f"Features {feature_text} and {topic.features[features[2]]}. "
                f"Part {step + 1} of {length} in the {brand} {topic.name} progression."
            )
            rows.append(
                {
                    "item_id": f"i{len(rows):04d}",
                    "title": f"{name} {ROMAN[step]}",
                    "text": text,
                    "topic": topic.name,
                    "series": f"s{series_index:03d}",
                    "step": step,
                    "released_at": min(first_release + step * gap, START + span - 7 * DAY),
                }
            )
        series_index += 1
    return pd.DataFrame(rows)


@dataclass
class _Shop:
    """What a user's walk through the catalogue looks up at every event (see ``_walk``).

    Plain Python lists for per-event scalar lookups (indexing numpy arrays one element at a time is
    what would make the walk slow), numpy arrays per topic for the weighted picks.
    """

    by_topic: list[np.ndarray]  # topic -> item indices
    topic_of: list[int]  # item -> topic
    position_of: list[int]  # item -> position in its topic's pool
    next_item: list[int]  # item -> next step of its series (-1 at a series end)
    released: list[int]  # item -> release time
    companions: list[list[int]]  # item -> its two "bought together" companions
    pool_released: list[np.ndarray]  # topic -> release times of its pool
    pool_appeal: list[np.ndarray]  # topic -> base appeal of its pool
    pool_boost: list[np.ndarray]  # topic -> freshness boost of its pool at START
    tau: float  # freshness time constant (seconds)
    seen_by_topic: list[np.ndarray]  # topic -> which of its pool the current user has taken


def _make_shop(rng: np.random.Generator, items: pd.DataFrame) -> _Shop:
    """Series successors, fixed companions, appeal and freshness of every item, per topic."""
    n_items = len(items)
    topic_of = items["topic"].map({t.name: i for i, t in enumerate(TOPICS)}).to_numpy()
    released = items["released_at"].to_numpy()
    step = items["step"].to_numpy()
    series = items["series"].to_numpy()
    # The next step of each item's series (-1 at a series end).
    next_item = np.full(n_items, -1)
    same_series_next = series[1:] == series[:-1]
    next_item[:-1][same_series_next] = np.arange(1, n_items)[same_series_next]
    # Each item has two fixed companions from the same topic ("bought together").
    by_topic = [np.flatnonzero(topic_of == t) for t in range(len(TOPICS))]
    companions = np.array(
        [rng.choice(by_topic[topic_of[i]], size=2) for i in range(n_items)], dtype=np.int64
    )
    # Long-tailed base appeal; series starts are the natural entry points.
    appeal = rng.lognormal(0.0, 1.0, size=n_items) * np.where(step == 0, 3.0, 1.0)
    fresh_days = 21.0  # freshness boost fades over about three weeks
    # Freshness: appeal * (1 + 4 exp(-age / tau)) = appeal + boost * exp(-(t - START) / tau),
    # with the boost precomputed per item so each event costs two vector operations, not six.
    tau = fresh_days * DAY
    position = np.empty(n_items, dtype=np.int64)
    for pool in by_topic:
        position[pool] = np.arange(len(pool))
    return _Shop(
        by_topic=by_topic,
        topic_of=topic_of.tolist(),
        position_of=position.tolist(),
        next_item=next_item.tolist(),
        released=released.tolist(),
        companions=companions.tolist(),
        pool_released=[released[pool] for pool in by_topic],
        pool_appeal=[appeal[pool] for pool in by_topic],
        pool_boost=[
            4.0 * appeal[pool] * np.exp((released[pool] - START) / tau) for pool in by_topic
        ],
        tau=tau,
        seen_by_topic=[np.zeros(len(pool), dtype=bool) for pool in by_topic],
    )


def _follow_up(
    shop: _Shop, last: int, t: int, roll: float, pick: float, p: tuple[float, float]
) -> int:
    """The next step of the last item's series or one of its companions, if released and unseen
    (-1 otherwise); ``p`` is ``(p_series, p_companion)``."""
    choice = -1
    if last >= 0 and roll < p[0]:
        candidate = shop.next_item[last]
        if candidate >= 0 and shop.released[candidate] <= t:
            choice = candidate
    elif last >= 0 and roll < p[0] + p[1]:
        candidate = shop.companions[last][int(pick * 2)]
        if shop.released[candidate] <= t:
            choice = candidate
    if choice >= 0 and shop.seen_by_topic[shop.topic_of[choice]][shop.position_of[choice]]:
        choice = -1
    return choice


def _by_taste(shop: _Shop, taste: np.ndarray, t: int, topic_draw: float, item_draw: float) -> int:
    """An unseen, released item of a topic drawn from the user's taste, weighted by appeal and
    freshness (-1 when that topic has no such item yet)."""
    n_topics = len(shop.by_topic)
    topic = min(int(taste.searchsorted(topic_draw)), n_topics - 1)
    weight = shop.pool_appeal[topic] + shop.pool_boost[topic] * math.exp(-(t - START) / shop.tau)
    weight[(shop.pool_released[topic] > t) | shop.seen_by_topic[topic]] = 0.0
    cumulative = weight.cumsum()
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return -1
    index = int(cumulative.searchsorted(item_draw * cumulative[-1]))
    return int(shop.by_topic[topic][index])


def _walk(
    rng: np.random.Generator, shop: _Shop, count: int, span: int, p: tuple[float, float]
) -> tuple[list[int], list[int]]:
    """One user's ``count`` events: ``(items, times)``. Their taste drifts from one topic mixture
    to another over their active period; ``p`` is ``(p_series, p_companion)``."""
    n_topics = len(shop.by_topic)
    taste_start = np.cumsum(rng.dirichlet(np.full(n_topics, 0.25)))
    taste_end = np.cumsum(rng.dirichlet(np.full(n_topics, 0.25)))
    begin = rng.uniform(0.0, 0.6) * span
    end = rng.uniform(begin + 0.3 * span, span)
    event_times = np.sort(rng.uniform(begin, end, size=count)).astype(np.int64) + START
    # Drawn up front per user: one vectorised call is far cheaper than one per event.
    draws = rng.random((count, 4)).tolist()
    history: list[int] = []
    times: list[int] = []
    last = -1
    for t, (roll, pick, topic_draw, item_draw) in zip(event_times.tolist(), draws, strict=True):
        choice = _follow_up(shop, last, t, roll, pick, p)
        if choice < 0:
            w = (t - START - begin) / max(end - begin, 1.0)
            taste = (1.0 - w) * taste_start + w * taste_end  # cumulative, ends at 1
            choice = _by_taste(shop, taste, t, topic_draw, item_draw)
            if choice < 0:  # topic with no items yet
                continue
        shop.seen_by_topic[shop.topic_of[choice]][shop.position_of[choice]] = True
        history.append(choice)
        times.append(t)
        last = choice
    for item in history:  # the next user starts with nothing seen
        shop.seen_by_topic[shop.topic_of[item]][shop.position_of[item]] = False
    return history, times


def _make_interactions(
    rng: np.random.Generator,
    items: pd.DataFrame,
    n_users: int,
    events_per_user: float,
    span: int,
    p_series: float,
    p_companion: float,
) -> pd.DataFrame:
    """Users walk the catalogue: continue a series, take a companion, or pick by topic taste."""
    shop = _make_shop(rng, items)
    users, chosen, times = [], [], []
    # Lognormal activity (a few heavy users), at least 5 events, at most 5x the mean.
    counts = np.clip(
        rng.lognormal(np.log(events_per_user) - 0.18, 0.6, size=n_users).astype(int),
        5,
        int(5 * events_per_user),
    )
    for user in range(n_users):
        history, event_times = _walk(rng, shop, counts[user], span, (p_series, p_companion))
        users += [user] * len(history)
        chosen += history
        times += event_times
    item_ids = items["item_id"].to_numpy()
    return pd.DataFrame(
        {
            "user_id": [f"u{u:04d}" for u in users],
            "item_id": item_ids[np.asarray(chosen, dtype=np.int64)],
            "timestamp": np.asarray(times, dtype=np.int64),
        }
    )
