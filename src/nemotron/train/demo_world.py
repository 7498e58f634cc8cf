"""The cast and scenery of the demo stories: characters, places, toys, food, feelings.

Every entry carries the words its sentences need (pronouns, prepositions, the verb that goes with a
toy), so the story templates stay grammatical whichever entries they draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from random import Random

GIRLS = ("Lily", "Mia", "Emma", "Lucy", "Sara", "Anna", "Ella", "Zoe", "Amy", "Rosa", "Nora", "Ivy",
         "Maya", "Kim", "Sue", "Jenny", "Kate", "Molly", "Ruby", "Hannah", "Chloe", "Grace", "Alice", "Olivia")
BOYS = ("Tom", "Ben", "Sam", "Leo", "Jack", "Tim", "Finn", "Max", "Noah", "Owen", "Jake", "Eli", "Theo",
        "Hugo", "Peter", "Adam", "Luke", "Oscar", "Henry", "Danny", "Joe", "Ryan", "Milo", "Liam")
PET_NAMES = ("Pip", "Spot", "Coco", "Biscuit", "Whiskers", "Buddy", "Fluffy", "Sunny", "Pepper", "Patch",
             "Nibbles", "Tiny", "Bubbles", "Rusty", "Snowy", "Ginger", "Hoppy", "Button", "Peanut", "Honey")
ANIMAL_KINDS = ("cat", "dog", "bunny", "bird", "fox", "bear", "mouse", "duck", "frog", "owl", "pig", "lamb",
                "turtle", "squirrel", "puppy", "kitten", "deer", "hedgehog")
TRAITS = ("little", "kind", "brave", "curious", "shy", "happy", "clever", "playful", "gentle", "friendly",
          "cheerful", "small", "young", "funny")
CHILD_HOBBIES = ("play outside", "draw pictures", "sing songs", "read books", "run fast", "build with blocks",
                 "look at the stars", "dance", "help in the garden", "play games with friends", "splash in puddles")
ANIMAL_HOBBIES = ("play in the grass", "explore", "run and jump", "nap in the sun", "look for snacks",
                  "chase butterflies", "listen to the birds", "play with friends", "roll in the leaves")
FEELINGS_GOOD = ("happy", "glad", "excited", "proud", "cheerful")
FEELINGS_BAD = ("sad", "worried", "upset", "scared")
GROWNUPS = (("Mom", "she", "her", "her"), ("Dad", "he", "his", "him"),
            ("Grandma", "she", "her", "her"), ("Grandpa", "he", "his", "him"))
WEATHER = ("sunny", "warm", "bright", "windy", "cool", "beautiful")
FOODS = (("cookies", "sweet"), ("apples", "red"), ("cupcakes", "yummy"), ("strawberries", "juicy"),
         ("sandwiches", "tasty"), ("grapes", "green"), ("carrots", "crunchy"), ("muffins", "warm"))
GAMES = ("hide and seek", "tag", "catch", "a game of pretend", "jump rope")


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    at: str  # "at the park"
    to: str  # "to the park"
    sights: tuple[str, ...]
    spots: tuple[str, ...]  # where something lost can turn up
    fun: tuple[str, ...]  # past-tense things to do there: "went down the slide"


PLACES = (
    Place("park", "at the park", "to the park", ("big green trees", "a tall slide", "a pond with ducks"),
          ("under a bench", "behind a big tree", "in the tall grass", "next to the slide"),
          ("went down the slide", "fed the ducks", "ran around the trees")),
    Place("beach", "at the beach", "to the beach", ("soft sand", "big blue waves", "pretty shells"),
          ("under the sand", "behind a big rock", "next to a sandcastle", "near the water"),
          ("built a sandcastle", "looked for shells", "splashed in the waves")),
    Place("forest", "in the forest", "to the forest", ("tall trees", "soft green moss", "a little stream"),
          ("under a pile of leaves", "behind a tree", "in a bush", "near the stream"),
          ("looked for pretty leaves", "listened to the birds", "jumped over a log")),
    Place("garden", "in the garden", "to the garden", ("bright flowers", "green vegetables", "a little fountain"),
          ("under a big leaf", "behind the flower pots", "in the bushes", "next to the fountain"),
          ("smelled the flowers", "watered the plants", "watched a butterfly")),
    Place("farm", "on the farm", "to the farm", ("cows and sheep", "a red barn", "a big field of corn"),
          ("in the hay", "behind the barn", "next to the fence", "in the chicken coop"),
          ("fed the chickens", "petted a little lamb", "rode on a hay cart")),
    Place("meadow", "in the meadow", "to the meadow", ("wild flowers", "buzzing bees", "tall grass"),
          ("in the tall grass", "under a flower bush", "behind a rock", "near a little tree"),
          ("picked flowers", "rolled down the grass", "watched the bees")),
    Place("backyard", "in the backyard", "to the backyard", ("a swing", "a sandbox", "a tree house"),
          ("in the sandbox", "under the swing", "behind the shed", "in the tree house"),
          ("played on the swing", "dug in the sandbox", "climbed into the tree house")),
    Place("playground", "at the playground", "to the playground", ("a big slide", "swings", "a sandbox"),
          ("under the slide", "in the sandbox", "next to the swings", "behind the climbing frame"),
          ("went down the slide", "played on the swings", "climbed the climbing frame")),
    Place("lake", "by the lake", "to the lake", ("blue water", "little boats", "green frogs"),
          ("in the reeds", "under the dock", "behind a rock", "on the shore"),
          ("threw stones into the water", "watched the boats", "looked for frogs")),
    Place("hill", "on the hill", "to the hill", ("a big old tree", "a view of the town", "soft green grass"),
          ("under the old tree", "behind a bush", "in the grass", "next to a rock"),
          ("rolled down the grass", "looked at the town below", "flew a paper plane")),
    Place("school", "at school", "to school", ("a big classroom", "colorful books", "a sunny yard"),
          ("under a desk", "in the toy box", "behind the door", "on a shelf"),
          ("painted a picture", "sang a song", "read a story together")),
)


@dataclass(frozen=True, slots=True)
class Thing:
    name: str
    looks: tuple[str, ...]
    play: str  # verb phrase taking the toy as object: "fly {the kite}"


THINGS = (
    Thing("ball", ("red", "bouncy", "big", "blue", "striped"), "play with"),
    Thing("kite", ("colorful", "red", "big", "yellow"), "fly"),
    Thing("teddy bear", ("soft", "brown", "fluffy", "old"), "hug"),
    Thing("toy car", ("shiny", "fast", "little", "green"), "race"),
    Thing("book", ("big", "new", "picture", "old"), "read"),
    Thing("doll", ("pretty", "little", "old", "smiling"), "play with"),
    Thing("drum", ("little", "loud", "red"), "play"),
    Thing("toy boat", ("little", "blue", "wooden"), "sail"),
    Thing("hat", ("big", "yellow", "funny", "warm"), "wear"),
    Thing("blanket", ("soft", "warm", "blue", "cozy"), "cuddle with"),
    Thing("robot", ("shiny", "silver", "little", "noisy"), "play with"),
    Thing("whistle", ("shiny", "little", "silver"), "blow"),
    Thing("scarf", ("warm", "red", "long", "striped"), "wear"),
    Thing("toy train", ("long", "wooden", "red"), "play with"),
)


@dataclass(frozen=True, slots=True)
class Character:
    name: str
    kind: str  # girl, boy, or an animal
    he: str
    his: str
    him: str
    trait: str

    @property
    def is_child(self) -> bool:
        return self.kind in ("girl", "boy")

    def fields(self, prefix: str = "") -> dict[str, str]:
        """Template fields: {name} {he} {He} {his} {His} {him} {kind} {trait} {himself} {hobby}."""
        out = {"name": self.name, "he": self.he, "He": self.he.capitalize(), "his": self.his,
               "His": self.his.capitalize(), "him": self.him, "kind": self.kind, "trait": self.trait,
               "himself": "herself" if self.he == "she" else "himself"}
        return {prefix + k: v for k, v in out.items()}


def make_character(rng: Random, kind: str | None = None, name: str | None = None,
                   avoid: tuple[str, ...] = ()) -> Character:
    """A random child or named animal; `kind` and `name` pin them (a story asked for in chat)."""
    if kind is None:
        kind = rng.choice(("girl", "boy", "girl", "boy", rng.choice(ANIMAL_KINDS)))
    if kind == "girl" or (kind not in ("boy",) and name in GIRLS):
        female = True
    elif kind == "boy" or name in BOYS:
        female = False
    else:
        female = rng.random() < 0.5
    if name is None:
        pool = PET_NAMES if kind not in ("girl", "boy") else (GIRLS if female else BOYS)
        name = rng.choice([n for n in pool if n not in avoid])
    trait = rng.choice(TRAITS)
    if female:
        return Character(name, kind, "she", "her", "her", trait)
    return Character(name, kind, "he", "his", "him", trait)


def make_friend(rng: Random, hero: Character) -> Character:
    """Children befriend children; an animal befriends an animal of another kind."""
    if hero.is_child:
        return make_character(rng, rng.choice(("girl", "boy")), avoid=(hero.name,))
    kind = rng.choice([k for k in ANIMAL_KINDS if k != hero.kind])
    return make_character(rng, kind, avoid=(hero.name,))
