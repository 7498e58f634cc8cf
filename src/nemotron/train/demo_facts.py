"""The demo corpus's knowledge base: simple facts, each as statements (pretraining text) and as
question/answer relations (chat data). Every answer is computed from the tables, so it is correct by
construction; the tables hold only facts a children's encyclopedia would state plainly."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random

# (name as used mid-sentence, capital, continent, language sentence)
COUNTRIES: tuple[tuple[str, str, str, str], ...] = (
    ("France", "Paris", "Europe", "French"), ("Germany", "Berlin", "Europe", "German"),
    ("Italy", "Rome", "Europe", "Italian"), ("Spain", "Madrid", "Europe", "Spanish"),
    ("Portugal", "Lisbon", "Europe", "Portuguese"), ("Greece", "Athens", "Europe", "Greek"),
    ("Norway", "Oslo", "Europe", "Norwegian"), ("Sweden", "Stockholm", "Europe", "Swedish"),
    ("Finland", "Helsinki", "Europe", "Finnish"), ("Denmark", "Copenhagen", "Europe", "Danish"),
    ("Poland", "Warsaw", "Europe", "Polish"), ("the Netherlands", "Amsterdam", "Europe", "Dutch"),
    ("Austria", "Vienna", "Europe", "German"), ("Hungary", "Budapest", "Europe", "Hungarian"),
    ("Ireland", "Dublin", "Europe", "English and Irish"), ("the United Kingdom", "London", "Europe", "English"),
    ("Russia", "Moscow", "Europe and Asia", "Russian"), ("Turkey", "Ankara", "Asia and Europe", "Turkish"),
    ("Japan", "Tokyo", "Asia", "Japanese"), ("China", "Beijing", "Asia", "Chinese"),
    ("South Korea", "Seoul", "Asia", "Korean"), ("Thailand", "Bangkok", "Asia", "Thai"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese"), ("India", "New Delhi", "Asia", "Hindi and English"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian"), ("Egypt", "Cairo", "Africa", "Arabic"),
    ("Morocco", "Rabat", "Africa", "Arabic"), ("Kenya", "Nairobi", "Africa", "Swahili and English"),
    ("Nigeria", "Abuja", "Africa", "English"), ("Ghana", "Accra", "Africa", "English"),
    ("Canada", "Ottawa", "North America", "English and French"),
    ("the United States", "Washington, D.C.", "North America", "English"),
    ("Mexico", "Mexico City", "North America", "Spanish"), ("Cuba", "Havana", "North America", "Spanish"),
    ("Brazil", "Brasilia", "South America", "Portuguese"), ("Argentina", "Buenos Aires", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"), ("Chile", "Santiago", "South America", "Spanish"),
    ("Colombia", "Bogota", "South America", "Spanish"), ("Australia", "Canberra", "Oceania", "English"),
    ("New Zealand", "Wellington", "Oceania", "English and Maori"),
)

# (animal, plural, sound verb phrase, home, food, legs, baby name, class)
ANIMALS: tuple[tuple[str, str, str, str, str, int, str, str], ...] = (
    ("cow", "cows", "says moo", "on a farm", "grass", 4, "calf", "mammal"),
    ("horse", "horses", "says neigh", "on a farm", "hay and grass", 4, "foal", "mammal"),
    ("sheep", "sheep", "says baa", "on a farm", "grass", 4, "lamb", "mammal"),
    ("pig", "pigs", "says oink", "on a farm", "corn and vegetables", 4, "piglet", "mammal"),
    ("chicken", "chickens", "says cluck", "on a farm", "seeds and grain", 2, "chick", "bird"),
    ("duck", "ducks", "says quack", "near ponds and lakes", "plants and small bugs", 2, "duckling", "bird"),
    ("dog", "dogs", "says woof", "with people", "dog food and meat", 4, "puppy", "mammal"),
    ("cat", "cats", "says meow", "with people", "fish and meat", 4, "kitten", "mammal"),
    ("lion", "lions", "roars", "on the grassy plains of Africa", "meat", 4, "cub", "mammal"),
    ("bear", "bears", "growls", "in the forest", "berries, fish and honey", 4, "cub", "mammal"),
    ("frog", "frogs", "says ribbit", "in ponds", "flies and bugs", 4, "tadpole", "amphibian"),
    ("owl", "owls", "says hoot", "in the forest", "mice and insects", 2, "owlet", "bird"),
    ("goat", "goats", "bleats", "on farms and mountains", "grass and leaves", 4, "kid", "mammal"),
    ("monkey", "monkeys", "chatters", "in the jungle", "fruit and leaves", 4, "baby monkey", "mammal"),
    ("elephant", "elephants", "trumpets", "in Africa and Asia", "grass, leaves and fruit", 4, "calf", "mammal"),
    ("snake", "snakes", "hisses", "in many warm places", "mice and eggs", 0, "snakelet", "reptile"),
    ("bee", "bees", "buzzes", "in a hive", "nectar from flowers", 6, "larva", "insect"),
    ("mouse", "mice", "squeaks", "in fields and houses", "seeds and grain", 4, "pup", "mammal"),
    ("rabbit", "rabbits", "is very quiet", "in burrows in fields", "grass and plants", 4, "kit", "mammal"),
    ("whale", "whales", "sings songs under water", "in the ocean", "small fish and krill", 0, "calf", "mammal"),
    ("penguin", "penguins", "squawks", "in cold places near the sea", "fish", 2, "chick", "bird"),
    ("spider", "spiders", "makes no sound", "in webs", "flies and other bugs", 8, "spiderling", "arachnid"),
    ("panda", "pandas", "bleats", "in the bamboo forests of China", "bamboo", 4, "cub", "mammal"),
    ("fish", "fish", "makes no sound", "in water", "small plants and bugs", 0, "fry", "animal that lives in water"),
)

# thing -> colour, with the article/plural form used in sentences
THING_COLOURS: tuple[tuple[str, str, str], ...] = (
    ("the sky", "is", "blue"), ("grass", "is", "green"), ("a banana", "is", "yellow"),
    ("snow", "is", "white"), ("milk", "is", "white"), ("a strawberry", "is", "red"),
    ("a tomato", "is", "red"), ("a carrot", "is", "orange"), ("a lemon", "is", "yellow"),
    ("chocolate", "is", "brown"), ("coal", "is", "black"), ("a pumpkin", "is", "orange"),
    ("the sea", "is", "blue"), ("a plum", "is", "purple"), ("leaves in summer", "are", "green"),
    ("clouds", "are", "white"), ("cherries", "are", "red"), ("the sun", "is", "yellow"),
)
COLOUR_MIXES: tuple[tuple[str, str, str], ...] = (
    ("red", "yellow", "orange"), ("blue", "yellow", "green"), ("red", "blue", "purple"),
    ("red", "white", "pink"), ("black", "white", "gray"),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
SEASONS = ("spring", "summer", "autumn", "winter")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth")

# (question variants, answer): everyday science, answered in one or two sentences.
SCIENCE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("What is the sun?", "Is the sun a star?"), "The sun is a star. It gives the earth light and heat."),
    (("What does the earth go around?", "Does the earth go around the sun?"),
     "The earth goes around the sun. One trip around the sun takes one year."),
    (("What goes around the earth?", "What does the moon go around?"), "The moon goes around the earth."),
    (("At what temperature does water freeze?", "When does water freeze?"),
     "Water freezes at zero degrees Celsius. Frozen water is called ice."),
    (("At what temperature does water boil?", "When does water boil?"),
     "Water boils at one hundred degrees Celsius."),
    (("What is ice?", "What is ice made of?"), "Ice is frozen water. When ice gets warm, it melts."),
    (("What do plants need to grow?", "How do plants grow?"),
     "Plants need water, sunlight and air to grow. Their roots take water from the soil."),
    (("Where does rain come from?", "What makes rain?"),
     "Rain comes from clouds. Clouds are made of tiny drops of water."),
    (("How many planets are there?", "How many planets go around the sun?"),
     "There are eight planets that go around the sun."),
    (("What is the biggest planet?", "Which planet is the largest?"), "Jupiter is the biggest planet."),
    (("Which planet do we live on?", "What is our planet called?"), "We live on the planet Earth."),
    (("What is the closest planet to the sun?", "Which planet is nearest to the sun?"),
     "Mercury is the closest planet to the sun."),
    (("What is the red planet?", "Which planet is called the red planet?"), "Mars is called the red planet."),
    (("What do we breathe?", "What gas do people need to breathe?"),
     "We breathe air. Our bodies need the oxygen in the air."),
    (("What does a magnet do?", "What can a magnet pick up?"),
     "A magnet pulls things made of iron, like nails and paper clips."),
    (("Which is faster, light or sound?", "Is light faster than sound?"),
     "Light is faster than sound. That is why we see lightning before we hear thunder."),
    (("What makes a rainbow?", "How is a rainbow made?"),
     "A rainbow appears when sunlight shines through drops of rain."),
    (("Why do we need to sleep?", "Why is sleep important?"),
     "Sleep helps our bodies rest and grow. Children need about ten hours of sleep."),
    (("What do bees make?", "Where does honey come from?"), "Bees make honey from the nectar of flowers."),
    (("What is a baby frog called?", "What does a tadpole grow into?"),
     "A baby frog is called a tadpole. A tadpole grows into a frog."),
    (("What does a caterpillar turn into?", "Where do butterflies come from?"),
     "A caterpillar turns into a butterfly."),
    (("How many hours are in a day?", "How long is one day?"), "There are twenty four hours in a day."),
    (("How many minutes are in an hour?",), "There are sixty minutes in an hour."),
    (("How many seconds are in a minute?",), "There are sixty seconds in a minute."),
    (("How many days are in a year?", "How long is a year?"), "A year has three hundred and sixty five days."),
    (("What is the tallest animal?", "Which animal has the longest neck?"),
     "The giraffe is the tallest animal. It has a very long neck."),
    (("What is the biggest animal?", "Which animal is the largest?"),
     "The blue whale is the biggest animal on earth."),
    (("Why do we brush our teeth?", "Why should I brush my teeth?"),
     "We brush our teeth to keep them clean and healthy."),
    (("What are the three states of water?", "What forms can water take?"),
     "Water can be a solid, a liquid or a gas: ice, water and steam."),
    (("Where do fish breathe?", "How do fish breathe?"), "Fish breathe under water with their gills."),
)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def end(text: str) -> str:
    """Close a sentence whose last word may already end with a full stop (D.C.)."""
    return text if text.endswith(".") else text + "."


def a_or_an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


@dataclass(frozen=True, slots=True)
class Relation:
    """One kind of question over a table: ask about an entity, answer it, name it in a follow-up."""

    name: str
    entities: tuple
    ask: Callable[[Random, object], str]
    answer: Callable[[object], str]
    mention: Callable[[object], str]  # "Germany" in "And what about Germany?"

    def wordings(self, entity: object) -> list[str]:
        """Every way the chat data asks this question about `entity`, in the order `ask` lists them."""
        return list(dict.fromkeys(self.ask(_Nth(k), entity) for k in range(8)))


class _Nth:
    """Stands in for the Random that `Relation.ask` picks a wording with: always the k-th option."""

    def __init__(self, k: int) -> None:
        self.k = k

    def choice(self, options):
        return options[min(self.k, len(options) - 1)]


def _pick(rng: Random, *options: str) -> str:
    return rng.choice(options)


def _legs(n: int) -> str:
    return "no legs" if n == 0 else f"{NUMBER_WORDS[n]} legs"


def _sound(a: tuple) -> str:
    return f"{cap(a_or_an(a[0]))} {a[2]}."


def _add(rng: Random, e: tuple) -> str:
    x, y = e
    return _pick(rng, f"What is {x} plus {y}?", f"What is {x} + {y}?", f"How much is {x} plus {y}?",
                 f"Can you add {x} and {y}?", f"{x} + {y} = ?", f"What do you get if you add {x} and {y}?")


def _sub(rng: Random, e: tuple) -> str:
    x, y = e
    return _pick(rng, f"What is {x} minus {y}?", f"What is {x} - {y}?", f"How much is {x} minus {y}?",
                 f"What is {y} taken away from {x}?", f"{x} - {y} = ?")


def _mul(rng: Random, e: tuple) -> str:
    x, y = e
    return _pick(rng, f"What is {x} times {y}?", f"What is {x} x {y}?", f"How much is {x} times {y}?",
                 f"What is {x} multiplied by {y}?", f"{x} * {y} = ?")


# Small enough ranges that a few-million-parameter model can learn every fact from the corpus.
ADDITIONS = tuple((x, y) for x in range(0, 11) for y in range(0, 11))
SUBTRACTIONS = tuple((x, y) for x in range(0, 21) for y in range(0, 11) if y <= x)
PRODUCTS = tuple((x, y) for x in range(1, 11) for y in range(1, 11))


def relations() -> tuple[Relation, ...]:
    c, an = COUNTRIES, ANIMALS
    return (
        Relation("capital", c, lambda r, e: _pick(
            r, f"What is the capital of {e[0]}?", f"What's the capital city of {e[0]}?",
            f"Which city is the capital of {e[0]}?", f"Tell me the capital of {e[0]}.",
            f"Do you know the capital of {e[0]}?", f"capital of {e[0]}?"),
            lambda e: end(f"The capital of {e[0]} is {e[1]}"), lambda e: e[0]),
        Relation("capital_of", c, lambda r, e: _pick(
            r, f"{e[1]} is the capital of which country?", f"Which country has {e[1]} as its capital?",
            f"Where is {e[1]}?"),
            lambda e: f"{e[1]} is the capital of {e[0]}.", lambda e: e[1]),
        Relation("continent", c, lambda r, e: _pick(
            r, f"Where is {e[0]}?", f"On which continent is {e[0]}?", f"Which continent is {e[0]} in?"),
            lambda e: f"{cap(e[0])} is a country in {e[2]}.", lambda e: e[0]),
        Relation("language", c, lambda r, e: _pick(
            r, f"What language do people speak in {e[0]}?", f"What do people speak in {e[0]}?",
            f"Which language is spoken in {e[0]}?"),
            lambda e: f"People in {e[0]} speak {e[3]}.", lambda e: e[0]),
        Relation("sound", an, lambda r, e: _pick(
            r, f"What sound does {a_or_an(e[0])} make?", f"What does {a_or_an(e[0])} say?",
            f"What noise do {e[1]} make?"), _sound, lambda e: f"{a_or_an(e[0])}"),
        Relation("baby", an, lambda r, e: _pick(
            r, f"What is a baby {e[0]} called?", f"What do you call a baby {e[0]}?"),
            lambda e: f"A baby {e[0]} is called {a_or_an(e[6])}.", lambda e: f"a {e[0]}"),
        Relation("legs", an, lambda r, e: _pick(
            r, f"How many legs does {a_or_an(e[0])} have?", f"How many legs do {e[1]} have?"),
            lambda e: f"{cap(a_or_an(e[0]))} has {_legs(e[5])}.", lambda e: a_or_an(e[0])),
        Relation("home", an, lambda r, e: _pick(
            r, f"Where do {e[1]} live?", f"Where does {a_or_an(e[0])} live?"),
            lambda e: f"{cap(e[1])} live {e[3]}.", lambda e: e[1]),
        Relation("food", an, lambda r, e: _pick(
            r, f"What do {e[1]} eat?", f"What does {a_or_an(e[0])} eat?", f"What food do {e[1]} like?"),
            lambda e: f"{cap(e[1])} eat {e[4]}.", lambda e: e[1]),
        Relation("class", an, lambda r, e: _pick(
            r, f"Is {a_or_an(e[0])} a mammal?", f"What kind of animal is {a_or_an(e[0])}?"),
            lambda e: f"{cap(a_or_an(e[0]))} is {a_or_an(e[7])}.", lambda e: a_or_an(e[0])),
        Relation("colour", THING_COLOURS, lambda r, e: _pick(
            r, f"What color {e[1]} {e[0]}?", f"What colour {e[1]} {e[0]}?", f"Which color {e[1]} {e[0]}?"),
            lambda e: f"{cap(e[0])} {e[1]} {e[2]}.", lambda e: e[0]),
        Relation("mix", COLOUR_MIXES, lambda r, e: _pick(
            r, f"What do you get when you mix {e[0]} and {e[1]}?", f"What color do {e[0]} and {e[1]} make?",
            f"If I mix {e[0]} paint and {e[1]} paint, what color do I get?"),
            lambda e: f"{cap(e[0])} and {e[1]} make {e[2]}.", lambda e: f"{e[0]} and {e[1]}"),
        Relation("add", ADDITIONS, _add, lambda e: f"{e[0]} plus {e[1]} is {e[0] + e[1]}.",
                 lambda e: f"{e[0]} plus {e[1]}"),
        Relation("sub", SUBTRACTIONS, _sub, lambda e: f"{e[0]} minus {e[1]} is {e[0] - e[1]}.",
                 lambda e: f"{e[0]} minus {e[1]}"),
        Relation("mul", PRODUCTS, _mul, lambda e: f"{e[0]} times {e[1]} is {e[0] * e[1]}.",
                 lambda e: f"{e[0]} times {e[1]}"),
        Relation("day_after", tuple(range(7)), lambda r, i: _pick(
            r, f"What day comes after {DAYS[i]}?", f"Which day is after {DAYS[i]}?",
            f"If today is {DAYS[i]}, what day is tomorrow?"),
            lambda i: f"{DAYS[(i + 1) % 7]} comes after {DAYS[i]}.", lambda i: DAYS[i]),
        Relation("day_before", tuple(range(7)), lambda r, i: _pick(
            r, f"What day comes before {DAYS[i]}?", f"If today is {DAYS[i]}, what day was yesterday?"),
            lambda i: f"{DAYS[(i - 1) % 7]} comes before {DAYS[i]}.", lambda i: DAYS[i]),
        Relation("month_number", tuple(range(12)), lambda r, i: _pick(
            r, f"What is the {ORDINALS[i]} month of the year?", f"Which month is the {ORDINALS[i]} month?"),
            lambda i: f"The {ORDINALS[i]} month of the year is {MONTHS[i]}.", lambda i: f"the {ORDINALS[i]} month"),
        Relation("month_after", tuple(range(12)), lambda r, i: _pick(
            r, f"What month comes after {MONTHS[i]}?", f"Which month is after {MONTHS[i]}?"),
            lambda i: f"{MONTHS[(i + 1) % 12]} comes after {MONTHS[i]}.", lambda i: MONTHS[i]),
        Relation("number_word", tuple(range(21)), lambda r, n: _pick(
            r, f"How do you write {n} in words?", f"How do you spell the number {n}?"),
            lambda n: f"The number {n} is written {NUMBER_WORDS[n]}.", lambda n: str(n)),
        Relation("next_number", tuple(range(100)), lambda r, n: _pick(
            r, f"What number comes after {n}?", f"What comes after {n}?"),
            lambda n: f"{n + 1} comes after {n}.", lambda n: str(n)),
        Relation("even", tuple(range(51)), lambda r, n: _pick(
            r, f"Is {n} even or odd?", f"Is {n} an even number?"),
            lambda n: f"{n} is {'an even' if n % 2 == 0 else 'an odd'} number.", lambda n: str(n)),
        Relation("science", SCIENCE, lambda r, e: r.choice(e[0]), lambda e: e[1], lambda e: ""),
    )


# Fixed-answer facts that are not parametric.
CALENDAR_QA: tuple[tuple[tuple[str, ...], str], ...] = (
    (("How many days are in a week?", "How many days does a week have?"), "There are seven days in a week."),
    (("What are the days of the week?", "Can you name the days of the week?"),
     "The days of the week are " + ", ".join(DAYS[:-1]) + " and Sunday."),
    (("How many months are in a year?", "How many months does a year have?"), "There are twelve months in a year."),
    (("What are the four seasons?", "Can you name the seasons?"),
     "The four seasons are spring, summer, autumn and winter."),
    (("What are the colors of the rainbow?", "What colors are in a rainbow?"),
     "The colors of the rainbow are red, orange, yellow, green, blue, indigo and violet."),
    (("What are the primary colors?", "Which colors are primary colors?"),
     "The primary colors are red, yellow and blue."),
    (("How many continents are there?", "What are the continents?"),
     "There are seven continents: Africa, Antarctica, Asia, Australia, Europe, North America and South America."),
)
