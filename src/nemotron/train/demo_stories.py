"""Short children's stories in the TinyStories spirit, told from plot outlines (demo_plots.py).

A plot is a sequence of beats; every beat offers several phrasings, and the same cast (pronouns
included), place and toy run through the whole story, so sentences stay consistent with each other.
"""
from __future__ import annotations

from random import Random

from nemotron.train.demo_facts import a_or_an
from nemotron.train.demo_plots import CHILD_ONLY, PLOTS
from nemotron.train.demo_world import (
    ANIMAL_HOBBIES, CHILD_HOBBIES, FEELINGS_BAD, GAMES, GROWNUPS, PLACES, THINGS, WEATHER, Character, Place,
    Thing, make_character, make_friend,
)
class Teller:
    """Collects sentences; `say` picks one phrasing and fills in the story's fields."""

    def __init__(self, rng: Random, fields: dict[str, str]) -> None:
        self.rng, self.fields = rng, fields
        self.paragraphs: list[list[str]] = [[]]

    def say(self, *variants: str) -> None:
        self.paragraphs[-1].append(self.rng.choice(variants).format_map(self.fields))

    def maybe(self, p: float, *variants: str) -> None:
        if self.rng.random() < p:
            self.say(*variants)

    def pick(self, key: str, options: tuple[str, ...]) -> str:
        self.fields[key] = self.rng.choice(options)
        return self.fields[key]

    def paragraph(self) -> None:
        if self.paragraphs[-1]:
            self.paragraphs.append([])

    def text(self) -> str:
        return "\n".join(" ".join(p) for p in self.paragraphs if p)


def _fields(rng: Random, hero: Character, friend: Character, place: Place, thing: Thing) -> dict[str, str]:
    grown, g_he, g_his, g_him = rng.choice(GROWNUPS)
    look = rng.choice(thing.looks)
    sights = rng.sample(place.sights, 2)
    spots = rng.sample(place.spots, 3)
    fields = {**hero.fields(), **friend.fields("f_"),
              "a_hero": a_or_an(f"{hero.trait} {hero.kind}"), "a_friend": a_or_an(f"{friend.trait} {friend.kind}"),
              "hobby": rng.choice(CHILD_HOBBIES if hero.is_child else ANIMAL_HOBBIES),
              "grown": grown.lower(), "Grown": grown, "g_he": g_he, "G_he": g_he.capitalize(), "g_his": g_his,
              "g_him": g_him, "weather": rng.choice(WEATHER), "bad": rng.choice(FEELINGS_BAD),
              "place": place.name, "at_place": place.at, "to_place": place.to, "sight": sights[0],
              "sight2": sights[1], "spot": spots[0], "spot2": spots[1], "spot3": spots[2],
              "fun": rng.choice(place.fun), "thing": thing.name, "a_thing": a_or_an(f"{look} {thing.name}"),
              "look": look, "a_gift": a_or_an(f"{rng.choice(('new', 'beautiful', 'shiny'))} {thing.name}"),
              "play": thing.play, "game": rng.choice(GAMES)}
    fields["Name_s"] = f"{hero.name}'s"
    return fields

def tell_story(rng: Random, *, hero: Character | None = None, plot: str | None = None,
               thing: Thing | None = None, place: Place | None = None) -> str:
    """One story. Pin the hero, plot, toy or place to answer a request ("a story about a kite")."""
    if hero is None:
        hero = make_character(rng)
    if plot is None:
        plot = rng.choice([p for p in PLOTS if hero.is_child or p not in CHILD_ONLY])
    friend = make_friend(rng, hero)
    teller = Teller(rng, _fields(rng, hero, friend, place or rng.choice(PLACES), thing or rng.choice(THINGS)))
    PLOTS[plot](teller)
    return teller.text()
