import re
from random import Random

from nemotron.tokenizer import render_chat
from nemotron.train.demo_chat import conversation
from nemotron.train.demo_corpus import CorpusConfig, chat_records, pretraining_documents
from nemotron.train.demo_facts import COUNTRIES, end, relations
from nemotron.train.demo_stories import tell_story

CONFIG = CorpusConfig(seed=5, num_stories=40, num_fact_documents=20, num_chats=40)


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert pretraining_documents(CONFIG) == pretraining_documents(CONFIG)
    assert chat_records(CONFIG) == chat_records(CONFIG)
    other = CorpusConfig(seed=6, num_stories=40, num_fact_documents=20, num_chats=40)
    assert pretraining_documents(other) != pretraining_documents(CONFIG)


def test_stories_are_varied_and_keep_their_cast():
    rng = Random(0)
    stories = [tell_story(rng) for _ in range(200)]
    assert len(set(stories)) == 200
    assert len({s.split(".")[0] for s in stories}) > 100  # many different openings
    for story in stories:
        assert "{" not in story and "}" not in story  # every template field was filled
        assert story[0].isupper() and story.rstrip()[-1] in '.!"'


def test_chats_render_in_the_nemotron_format():
    for record in chat_records(CONFIG):
        text = render_chat(record["messages"], add_generation_prompt=False)
        assert text.startswith("<extra_id_0>System\n") and "<extra_id_1>Assistant\n" in text
        assert record["messages"][-1]["role"] == "assistant"


def test_answers_are_correct_by_construction():
    rng = Random(1)
    arithmetic = {r.name: r for r in relations() if r.name in ("add", "sub", "mul")}
    for name, relation in arithmetic.items():
        for entity in relation.entities:
            a, op, b, _, result = relation.answer(entity).rstrip(".").split()
            assert int(result) == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
    capitals = {name: capital for name, capital, _, _ in COUNTRIES}
    for _ in range(300):
        for message in conversation(rng):
            found = re.fullmatch(r"The capital of (.+) is .+", message["content"])
            if message["role"] == "assistant" and found:
                assert message["content"] == end(f"The capital of {found[1]} is {capitals[found[1]]}")


def test_wordings_list_every_way_the_chat_data_asks():
    for relation in relations():
        entity = relation.entities[0]
        wordings = relation.wordings(entity)
        asked = {relation.ask(Random(seed), entity) for seed in range(200)}
        assert set(wordings) == asked, relation.name  # no more and no fewer than the data uses
        assert len(wordings) == len(set(wordings))
    add = next(r for r in relations() if r.name == "add")
    assert add.wordings((7, 8))[0] == "What is 7 plus 8?"  # in the order `ask` lists them
