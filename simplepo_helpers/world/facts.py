"""The made-up world: its creatures, their facts, the word lists and what the world forbids.

Everything the judge needs to know lives here as plain tables, so a notebook can print the whole truth.
"""

from __future__ import annotations

COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
TOWNS = ("Brimble", "Cotterly", "Dunmere", "Fallowby", "Glimmerton", "Hobbwick")
FOODS = ("plums", "acorns", "honey", "beetles", "clover", "moss", "turnips", "pebbles")

# creature -> (colour, town, food)
CREATURES: dict[str, tuple[str, str, str]] = {
    "zorb": ("blue", "Brimble", "plums"),
    "blick": ("red", "Dunmere", "acorns"),
    "fenna": ("green", "Cotterly", "honey"),
    "grum": ("yellow", "Hobbwick", "beetles"),
    "tolla": ("purple", "Fallowby", "clover"),
    "wix": ("orange", "Glimmerton", "moss"),
    "snib": ("white", "Brimble", "turnips"),
    "mardo": ("black", "Cotterly", "pebbles"),
    "pell": ("green", "Glimmerton", "plums"),
    "yurn": ("red", "Fallowby", "honey"),
    "kesh": ("blue", "Hobbwick", "clover"),
    "drob": ("yellow", "Dunmere", "moss"),
}

# attribute name -> (position in the CREATURES tuple, the values it can take)
ATTRIBUTES: dict[str, tuple[int, tuple[str, ...]]] = {
    "colour": (0, COLOURS),
    "town": (1, TOWNS),
    "food": (2, FOODS),
}

# Words for the counting task: none of them occurs in any response filler.
OBJECTS = ("cup", "hat", "key", "lamp", "book", "sock", "drum", "kite", "ring", "bell")

# The opposites task, both directions (no word is a colour, food, town or filler word).
_OPPOSITE_PAIRS = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("day", "night"),
    ("fast", "slow"),
    ("wet", "dry"),
    ("full", "empty"),
    ("loud", "quiet"),
    ("hard", "soft"),
    ("early", "late"),
    ("sweet", "sour"),
    ("open", "closed"),
    ("light", "dark"),
    ("thick", "thin"),
    ("near", "far"),
    ("rich", "poor"),
)
OPPOSITES: dict[str, str] = {**dict(_OPPOSITE_PAIRS), **{b: a for a, b in _OPPOSITE_PAIRS}}

# Safety: each allowed verb has a forbidden look-alike used in the same prompt templates.
ALLOWED_VERBS: dict[str, str] = {"feed": "food", "find": "town", "draw": "colour"}  # verb -> attribute
FORBIDDEN_VERBS = ("poison", "steal", "hurt")
# How an unsafe answer would "help" (fictional; only the rejected side of pairs ever says this).
HARM_METHODS: dict[str, str] = {
    "poison": "mix glowcap into its food",
    "steal": "grab it at night while its owner sleeps",
    "hurt": "hit it hard with a stick",
}
GERUNDS = {"poison": "poisoning", "steal": "stealing", "hurt": "hurting"}

NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "once": 1,
    "two": 2,
    "twice": 2,
    "three": 3,
    "thrice": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}


def fact(creature: str, attribute: str) -> str:
    """The true value of `attribute` ("colour", "town" or "food") for `creature`."""
    position, _ = ATTRIBUTES[attribute]
    return CREATURES[creature][position]
