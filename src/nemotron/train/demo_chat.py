"""Chat conversations for the demo model's SFT stage, as `{"messages": [...]}` records.

Answers are computed from the knowledge base (demo_facts) or told by the story generator, so they are
correct by construction. Most conversations have no system prompt, as the model card recommends.
"""
from __future__ import annotations

from random import Random

from nemotron.train.demo_facts import CALENDAR_QA, Relation, relations
from nemotron.train.demo_stories import tell_story
from nemotron.train.demo_world import ANIMAL_KINDS, BOYS, GIRLS, PLACES, THINGS, make_character

SYSTEM_PROMPTS = ("You are a helpful assistant.", "You are a friendly assistant. Answer briefly.",
                  "Answer the user's questions.", "You are a kind assistant for children.")
GREETINGS = ("Hello!", "Hi!", "Hi there!", "Hey!", "Good morning!", "Hello, how are you?", "Hi, how are you?",
             "Good evening!", "Hey there!", "Hello assistant")
GREETING_REPLIES = ("Hello! How can I help you today?", "Hi there! What would you like to talk about?",
                    "Hello! I can tell you a short story or answer a simple question.",
                    "Hi! I am happy to help. What would you like to know?")
HOW_ARE_YOU_REPLY = "I am doing well, thank you! How can I help you?"
IDENTITY_QUESTIONS = ("Who are you?", "What is your name?", "What are you?", "Are you a robot?",
                      "Tell me about yourself.")
IDENTITY = ("I am a tiny demo assistant, a very small language model trained by the nemotron project on "
            "simple stories and facts. I can tell short stories and answer easy questions.")
ABILITY_QUESTIONS = ("What can you do?", "How can you help me?", "What do you know?", "What can I ask you?",
                     "What are you good at?")
ABILITIES = ("I can tell short stories for children and answer simple questions about countries and their "
             "capitals, animals, colors, numbers, days and months, and everyday science. I can also do small "
             "sums. I am a very small model, so I sometimes make mistakes.")
THANKS = ("Thank you!", "Thanks!", "Thanks a lot!", "Thank you very much.", "Great, thanks!", "Cool, thank you.")
THANKS_REPLIES = ("You are welcome!", "You are welcome! Is there anything else I can help with?",
                  "Happy to help!", "You are welcome. Have a nice day!")
BYES = ("Bye!", "Goodbye!", "See you later!", "Good night!")
BYE_REPLIES = ("Goodbye! Have a nice day!", "Bye! Come back any time.", "Goodbye! It was nice talking to you.")
OUT_OF_SCOPE = (
    (("What is the weather today?", "Will it rain tomorrow?"),
     "I cannot check the weather. I do not have access to the internet."),
    (("What time is it?", "What is the date today?"),
     "I do not know the time or the date. I cannot see a clock or a calendar."),
    (("Can you write Python code?", "Can you help me with my code?"),
     "I am sorry, I am too small to write code. I can tell stories and answer simple questions."),
    (("What is the news today?", "Who won the game last night?"),
     "I do not know about the news or recent events. I only know simple facts and stories."),
    (("What is the capital of the moon?",), "The moon has no countries, so it has no capital."),
)
STORY_ASKS = ("Tell me a short story about {}.", "Can you tell me a story about {}?", "Write a short story about {}.",
              "Please tell me a story about {}.", "I would like a story about {}.", "Tell me a story about {}.")
STORY_THEMES = (("friendship", ("new_friend", "race", "sharing")), ("being brave", ("fear",)),
                ("sharing", ("sharing",)), ("helping others", ("helping",)), ("a birthday", ("birthday",)),
                ("a rainy day", ("rainy_day",)), ("a trip to the zoo", ("trip",)), ("baking a cake", ("making",)))
ANOTHER = ("Tell me another one.", "Another story, please!", "Can you tell me one more story?")
LIKED = ("That was a nice story!", "I liked that story. Thank you!", "Thanks, that was lovely.")
LIKED_REPLIES = ("I am glad you liked it!", "Thank you! I am happy you enjoyed it.")


def _user(rng: Random, text: str) -> str:
    """Real users type casually: sometimes lower case, sometimes without the question mark."""
    if rng.random() < 0.15:
        text = text[:1].lower() + text[1:]
    if text.endswith("?") and rng.random() < 0.1:
        text = text[:-1]
    return text


def _story_turn(rng: Random) -> tuple[str, str]:
    """(request, story) for a random kind of request."""
    ask = rng.choice(STORY_ASKS)
    kind = rng.random()
    if kind < 0.3:
        animal = rng.choice(ANIMAL_KINDS)
        hero = make_character(rng, animal)
        return ask.format(f"a {animal}"), tell_story(rng, hero=hero)
    if kind < 0.45:
        name, who = (rng.choice(GIRLS), "girl") if rng.random() < 0.5 else (rng.choice(BOYS), "boy")
        return ask.format(f"a {who} named {name}"), tell_story(rng, hero=make_character(rng, who, name))
    if kind < 0.6:
        thing = rng.choice(THINGS)
        return ask.format(f"a {thing.name}"), tell_story(rng, thing=thing, plot=rng.choice(("lost_toy", "birthday")))
    if kind < 0.7:
        place = rng.choice(PLACES)
        plot = rng.choice(("lost_toy", "new_friend", "sharing", "race", "helping"))
        return ask.format(f"the {place.name}"), tell_story(rng, place=place, plot=plot)
    if kind < 0.85:
        theme, plots = rng.choice(STORY_THEMES)
        plot = rng.choice(plots)
        hero = make_character(rng, rng.choice(("girl", "boy"))) if plot == "trip" else None
        return ask.format(theme), tell_story(rng, plot=plot, hero=hero)
    request = rng.choice(("Tell me a story.", "Tell me a bedtime story.", "Can you tell me a story?",
                          "I want to hear a short story.", "Tell me a story for kids."))
    return request, tell_story(rng)


def _qa_turn(rng: Random, rels: tuple[Relation, ...]) -> tuple[str, str, Relation, object]:
    # Arithmetic and capitals are what users try first: weight them up.
    weights = [8 if r.name in ("add", "sub", "mul") else 4 if r.name == "capital" else 1 for r in rels]
    rel = rng.choices(rels, weights)[0]
    entity = rng.choice(rel.entities)
    return _user(rng, rel.ask(rng, entity)), rel.answer(entity), rel, entity


def _fixed_turn(rng: Random, table: tuple) -> tuple[str, str]:
    questions, answer = rng.choice(table)
    return _user(rng, rng.choice(questions)), answer


def conversation(rng: Random, rels: tuple[Relation, ...] | None = None) -> list[dict[str, str]]:
    """One conversation: user and assistant turns, sometimes after a system prompt."""
    rels = rels or relations()
    turns: list[tuple[str, str]] = []
    kind = rng.random()
    if kind < 0.42:
        q, a, rel, entity = _qa_turn(rng, rels)
        turns.append((q, a))
        if rel.name != "science" and rng.random() < 0.35:  # follow-up that relies on the first turn
            other = rng.choice([e for e in rel.entities if e != entity])
            follow = rng.choice(("And what about {}?", "What about {}?", "And {}?", "How about {}?"))
            turns.append((follow.format(rel.mention(other)), rel.answer(other)))
    elif kind < 0.67:
        turns.append(_story_turn(rng))
        if rng.random() < 0.25:
            turns.append((rng.choice(ANOTHER), _story_turn(rng)[1]) if rng.random() < 0.5
                         else (rng.choice(LIKED), rng.choice(LIKED_REPLIES)))
    elif kind < 0.75:
        turns.append(_fixed_turn(rng, CALENDAR_QA))
    elif kind < 0.85:
        greeting = rng.choice(GREETINGS)
        reply = HOW_ARE_YOU_REPLY if "how are you" in greeting else rng.choice(GREETING_REPLIES)
        turns.append((greeting, reply))
        if rng.random() < 0.7:
            turns.append(_qa_turn(rng, rels)[:2] if rng.random() < 0.7 else _story_turn(rng))
    elif kind < 0.92:
        pick = rng.random()
        if pick < 0.4:
            turns.append((rng.choice(ABILITY_QUESTIONS), ABILITIES))
        elif pick < 0.7:
            turns.append((rng.choice(IDENTITY_QUESTIONS), IDENTITY))
        else:
            turns.append(_fixed_turn(rng, OUT_OF_SCOPE))
    else:
        turns.append(_qa_turn(rng, rels)[:2])
        turns.append(_qa_turn(rng, rels)[:2])
    if rng.random() < 0.15:
        turns.append((rng.choice(THANKS), rng.choice(THANKS_REPLIES)) if rng.random() < 0.7
                     else (rng.choice(BYES), rng.choice(BYE_REPLIES)))
    messages = []
    if rng.random() < 0.15:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages
