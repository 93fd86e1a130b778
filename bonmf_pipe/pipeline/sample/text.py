"""Words of the synthetic sample: genres, titles and tags, each chosen from the item factors.

A *slot* is a (factor, sign) pair: slot ``2k`` is factor ``k`` positive, slot ``2k+1`` factor
``k`` negative. Each slot owns two genres (a common one and a rarer one), a list of
adjectives, a list of nouns and a list of tags; an item draws its words from the slots of
its strongest factors, so the words tell about the factors. Factors beyond the eighth
reuse the vocabularies of factor ``k mod 8`` (their words are then shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The 18 MovieLens genres (ml-1m spelling), by slot: (common genre, rarer genre).
SLOT_GENRES: tuple[tuple[str, str], ...] = (
    ("Action", "War"), ("Drama", "Film-Noir"),  # factor 0 +/-
    ("Comedy", "Musical"), ("Thriller", "Mystery"),  # factor 1
    ("Sci-Fi", "Fantasy"), ("Romance", "Western"),  # factor 2
    ("Horror", "Crime"), ("Children's", "Animation"),  # factor 3
    ("Adventure", "Western"), ("Documentary", "War"),  # factor 4
    ("Crime", "Film-Noir"), ("Musical", "Animation"),  # factor 5
    ("Fantasy", "Adventure"), ("War", "Documentary"),  # factor 6
    ("Animation", "Children's"), ("Western", "Romance"),  # factor 7
)
GENRES_1M = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
COMMON_THRESHOLD = 1.0  # |z| above which a factor gives its slot's common genre
RARE_THRESHOLD = 1.8  # |z| above which it also gives the rarer genre
MAX_GENRES = 4

ADJECTIVES: tuple[tuple[str, ...], ...] = (
    ("Burning", "Iron", "Furious", "Steel", "Lethal", "Savage"),
    ("Quiet", "Fragile", "Tender", "Broken", "Silent", "Lonely"),
    ("Crazy", "Silly", "Happy", "Goofy", "Wacky", "Jolly"),
    ("Dark", "Deadly", "Hidden", "Cold", "Secret", "Twisted"),
    ("Stellar", "Cosmic", "Quantum", "Orbital", "Galactic", "Robotic"),
    ("Sweet", "Eternal", "Golden", "Parisian", "Café", "Summer"),
    ("Bloody", "Haunted", "Cursed", "Undead", "Wicked", "Ghastly"),
    ("Little", "Magic", "Merry", "Tiny", "Jolly", "Fluffy"),
    ("Wild", "Lost", "Great", "Brave", "Distant", "Hidden"),
    ("True", "Real", "Inside", "Ordinary", "Forgotten", "Untold"),
    ("Dirty", "Crooked", "Stolen", "Hard-Boiled", "Rotten", "Mean"),
    ("Singing", "Dancing", "Swinging", "Jazz", "Noël", "Broadway"),
    ("Enchanted", "Ancient", "Mystic", "Dragon", "Elven", "Shadow"),
    ("Last", "Fallen", "Final", "Bitter", "Grim", "Frozen"),
    ("Painted", "Cartoon", "Bouncy", "Colourful", "Plush", "Toy"),
    ("Dusty", "Lone", "Señor", "Rusty", "Wandering", "Outlaw"),
)
NOUNS: tuple[tuple[str, ...], ...] = (
    ("Fury", "Strike", "Mission", "Bullet", "Impact", "Commando"),
    ("Heart", "Letters", "Winter", "Mother", "Silence", "River"),
    ("Wedding", "Party", "Roommates", "Vacation", "Mix-Up", "Neighbours"),
    ("Witness", "Alibi", "Stranger", "Conspiracy", "Trap", "Motive"),
    ("Planet", "Android", "Starship", "Nebula", "Colony", "Signal"),
    ("Kiss", "Promise", "Affair", "Valentine", "Romance", "Honeymoon"),
    ("Night", "Curse", "Crypt", "Possession", "Ritual", "Scream"),
    ("Puppy", "Friends", "Treasure", "Adventure", "Pony", "Elf"),
    ("Expedition", "Island", "Quest", "Journey", "Jungle", "Voyage"),
    ("Story", "Lives", "Truth", "Report", "Record", "Portrait"),
    ("Heist", "Mob", "Job", "Score", "Getaway", "Racket"),
    ("Melody", "Song", "Show", "Revue", "Chorus", "Serenade"),
    ("Kingdom", "Sword", "Wizard", "Realm", "Crown", "Prophecy"),
    ("Battalion", "Front", "Siege", "Patrol", "Trench", "Retreat"),
    ("Toons", "Critters", "Bunnies", "Robots", "Fables", "Doodles"),
    ("Frontier", "Saloon", "Rider", "Gunslinger", "Canyon", "Ranch"),
)
TAGS: tuple[tuple[str, ...], ...] = (
    ("explosive", "great action"), ("slow burn", "character study"),
    ("funny", "feel-good"), ("suspense", "twist ending"),
    ("sci-fi", "mind-bending"), ("romantic", "chick flick"),
    ("scary", "gore"), ("family", "kids"),
    ("exotic locations", "epic"), ("based on a true story", "documentary"),
    ("heist", "gangsters"), ("music", "dancing"),
    ("magic", "world-building"), ("war", "sad, but good"),
    ("animation", "pixar-like"), ("western", "cowboys"),
)
SEQUELS = ("II", "III", "2", "Returns", "Reloaded")
N_WORD_SLOTS = len(ADJECTIVES)


def slot_of(z: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The vocabulary slot of factor ``factor[r]`` of row ``r`` given standardised factors ``z``."""
    rows = np.arange(len(factor))
    negative = z[rows, factor] < 0
    return (2 * (factor % (N_WORD_SLOTS // 2)) + negative).astype(np.int64)


def strongest_factors(z: np.ndarray, k: int) -> np.ndarray:
    """(items, k) the indices of each item's ``k`` largest ``|z|``, strongest first."""
    k = min(k, z.shape[1])
    return np.argsort(-np.abs(z), axis=1, kind="stable")[:, :k]


def item_genres(z: np.ndarray) -> list[list[str]]:
    """Genres per item (ml-1m spelling): every factor with ``|z| > 1`` gives its slot's
    common genre, ``|z| > 1.8`` also the rarer one; at most four, strongest first; an item
    with no strong factor gets the common genre of its strongest one."""
    top = strongest_factors(z, z.shape[1])
    out: list[list[str]] = []
    for row, order in zip(z, top, strict=True):
        names: list[str] = []
        for f in order:
            magnitude = abs(row[f])
            if magnitude <= COMMON_THRESHOLD and names:
                break
            common, rare = SLOT_GENRES[2 * (f % 8) + (row[f] < 0)]
            for name in (common, rare) if magnitude > RARE_THRESHOLD else (common,):
                if name not in names:
                    names.append(name)
            if magnitude <= COMMON_THRESHOLD:
                break
        out.append(names[:MAX_GENRES])
    return out


@dataclass(frozen=True)
class ItemText:
    """Titles (without year) and genre lists of every item, in item order."""

    titles: list[str]
    genres: list[list[str]]


def item_text(z: np.ndarray, rng: np.random.Generator) -> ItemText:
    """Titles from the two strongest factors: an adjective of the first, a noun of the second.

    Patterns (chosen at random): "Adj Noun", "Adj Noun, The" (MovieLens puts articles last,
    so these titles hold a comma), "Noun of the Noun", "Adj Noun II".
    """
    top = strongest_factors(z, 2)
    first = slot_of(z, top[:, 0])
    second = slot_of(z, top[:, -1])
    n = len(z)
    word_a, word_b, word_c = rng.integers(0, 6, (3, n))
    pattern = rng.choice(4, size=n, p=[0.5, 0.2, 0.2, 0.1])
    sequel = rng.integers(0, len(SEQUELS), n)
    titles = []
    for i in range(n):
        adj = ADJECTIVES[first[i]][word_a[i]]
        noun = NOUNS[second[i]][word_b[i]]
        if pattern[i] == 0:
            titles.append(f"{adj} {noun}")
        elif pattern[i] == 1:
            titles.append(f"{adj} {noun}, The")
        elif pattern[i] == 2:
            titles.append(f"{NOUNS[first[i]][word_c[i]]} of the {noun}")
        else:
            titles.append(f"{adj} {noun} {SEQUELS[sequel[i]]}")
    return ItemText(titles=titles, genres=item_genres(z))


def spell_genre(name: str, edition: str) -> str:
    """ml-latest-small spells "Children's" as "Children"."""
    return "Children" if edition == "ml-latest-small" and name == "Children's" else name


def tag_words(z: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One tag per entry of ``items``: from the slot of one of the item's two strongest factors."""
    top = strongest_factors(z, 2)
    pick = rng.integers(0, top.shape[1], len(items))
    factor = top[items, pick]
    slot = slot_of(z[items], factor)
    word = rng.integers(0, 2, len(items))
    return [TAGS[s][w] for s, w in zip(slot.tolist(), word.tolist(), strict=True)]
