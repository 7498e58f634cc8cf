"""Every constraint type on a hand-written passing and failing response, plus sampling, conflicts,
serialisation, instruction texts and the text measures (langdetect, NLTK Punkt). The side-by-side
agreement with IFEval's reference code is in test_constraints_ifeval.py."""
from __future__ import annotations

import json
import random

import pytest

from nemotron.sdg.constraints import (
    CONFLICTS,
    CONSTRAINT_TYPES,
    Constraint,
    apply_constraints,
    check_all,
    conflicts,
    LANGUAGE_NAMES,
    count_sentences,
    detect_language,
    sample_constraint,
    sample_constraints,
    word_tokens,
)

PROMPT = "Describe the history of the printing press in Europe."

# type_id, kwargs, a response that follows it, a response that does not
CASES = [
    ("keywords:existence", {"keywords": ["garden", "river"]},
     "The river runs past the Garden wall.", "The river runs past the wall."),
    ("keywords:frequency", {"keyword": "tree", "frequency": 3, "relation": "at least"},
     "A tree, a street and a third Tree.", "A tree and a forest."),  # IFEval counts inside words
    ("keywords:frequency", {"keyword": "tree", "frequency": 2, "relation": "less than"},
     "One tree stands in the road.", "One tree stands in the street."),
    ("keywords:forbidden_words", {"forbidden_words": ["art", "paint"]},
     "We start with painting the smart wall.", "Art is everywhere."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zebras zigzag through the maze.", "Zebras run."),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
     "A cat sat on a mat.", "Every elephant eats."),
    ("language:response_language", {"language": "fr"},
     "Le chat dort sur la table et il ne veut pas se réveiller.",
     "The cat is sleeping on the table and it does not want to wake up."),
    ("language:response_language", {"language": "ja"},
     "猫はテーブルの上で寝ています。", "猫在桌子上睡觉，它不想醒来。"),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith arrived at 3.30 p.m. today. He left soon.", "One. Two! Three? Four."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One. Two! Three? Four", "Only one sentence here, e.g. this one."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "First part.\n***\nSecond part.\n***\nThird part.", "First part.\n***\n***\nThird part."),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
     "one two three four five", "one two three four"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "one two three four", "one two three four five six"),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "river"},
     "Intro here.\n\n\"River, they said, is long.\n\nThe end.",
     "Intro here.\n\nThe river is long.\n\nThe end."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], we meet at [address].", "Dear [name], we meet at home."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Main text.\n\nP.S. See you soon.", "Main text. Bye."),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"},
     "Main text.\nP.S. one\np.p.s. two", "Main text.\nP.S. only one"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Points:\n* first\n- second\n\n**bold** line", "Points:\n* first\n- second\n---"),  # IFEval: --- is one
    ("detectable_format:constrained_response", {},
     "My answer is maybe.", "Maybe, I am not sure."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "This is *important* and **also this**.", "Only *one* highlight here, ** ** none."),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nIntro\n## SECTION 2\nMore", "Section 1\nIntro\nSection 2\nMore"),
    ("detectable_format:json_format", {},
     '```json\n{"a": [1, 2]}\n```', 'Here is JSON: {"a": 1}'),
    ("detectable_format:title", {},
     "<<A Poem of Joy>>\nLines follow.", "<< >> no title\n<<broken\n>>"),
    ("combination:two_responses", {},
     "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    ("combination:repeat_prompt", {"prompt_to_repeat": PROMPT},
     PROMPT + "\nThe press arrived in Mainz around 1450.", "Sure! " + PROMPT),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "That is how it works. Any other questions?", "Any other questions? That is how it works."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is VERY WELL-KNOWN.", "This is VERY well-KNOWN."),  # a hyphenated word counts once
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "This is VERY well known.", "This is VERY WELL known."),
    ("change_case:english_capital", {},
     "THE CAT IS ON THE TABLE AND IT IS HAPPY.", "THE CAT IS ON THE table."),
    ("change_case:english_lowercase", {},
     "the cat is on the table and it is happy.", "the cat is on the Table."),
    ("punctuation:no_comma", {},
     "No commas appear here at all.", "Well, one comma."),
    ("startend:quotation", {},
     '  "The whole reply is quoted."  ', '"Only the start is quoted.'),
]


@pytest.mark.parametrize("type_id,kwargs,good,bad", CASES, ids=[c[0] for c in CASES])
def test_pass_and_fail(type_id, kwargs, good, bad):
    c = Constraint(type_id, kwargs)
    assert c.check(good, PROMPT), (c.instruction(), good)
    assert not c.check(bad, PROMPT), (c.instruction(), bad)
    assert c.instruction().strip()


def test_every_type_has_a_case():
    assert set(CONSTRAINT_TYPES) == {c[0] for c in CASES}
    assert len(CONSTRAINT_TYPES) >= 25


def test_language_check_of_non_english_fails_english_case():
    assert not Constraint("change_case:english_lowercase", {}).check("le chat est sur la table et il dort.")
    assert not Constraint("change_case:english_capital", {}).check("WIR SIND ZU HAUSE GEBLIEBEN, WEIL ES KALT WAR.")


def test_loose_check_drops_preamble_and_markdown():
    c = Constraint("startend:quotation", {})
    response = 'Sure, here it is:\n"Quoted reply."'
    assert not c.check(response) and c.check_loose(response)
    ending = Constraint("startend:end_checker", {"end_phrase": "Any other questions?"})
    bold = "Done.\n**Any other questions?**"
    assert not ending.check(bold) and ending.check_loose(bold)
    assert not ending.check_loose("Any other questions? Yes.")
    # loose never turns an unmet constraint into a met one by emptying the response
    assert not Constraint("punctuation:no_comma", {}).check_loose("a, b")


@pytest.mark.parametrize("type_id", sorted(CONSTRAINT_TYPES))
def test_round_trip_serialisation(type_id):
    rng = random.Random(hash(type_id) % 1000)
    c = sample_constraint(rng, [type_id], prompt=PROMPT)
    data = json.loads(json.dumps(c.to_dict()))
    back = Constraint.from_dict(data)
    assert back == c and hash(back) == hash(c)
    assert back.instruction() == c.instruction()


def test_kwargs_are_validated_and_copied():
    with pytest.raises(ValueError, match="unknown constraint type"):
        Constraint("keywords:nope", {})
    with pytest.raises(ValueError, match="relation"):
        Constraint("length_constraints:number_words", {"num_words": 10, "relation": "at most"})
    with pytest.raises(ValueError, match="expected kwargs"):
        Constraint("punctuation:no_comma", {"extra": 1})
    with pytest.raises(ValueError, match="nth_paragraph"):
        Constraint("length_constraints:nth_paragraph_first_word",
                   {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"})
    words = ["alpha", "beta"]
    c = Constraint("keywords:existence", {"keywords": words})
    words.append("gamma")
    assert c.kwargs["keywords"] == ["alpha", "beta"]


def test_conflict_table_is_symmetric_and_reflexive():
    for a, others in CONFLICTS.items():
        assert a in others
        for b in others:
            assert a in CONFLICTS[b]
    assert conflicts("detectable_format:constrained_response", "punctuation:no_comma")
    assert conflicts("detectable_format:title", "startend:quotation")
    assert not conflicts("punctuation:no_comma", "detectable_format:title")


def test_sample_constraints_avoid_conflicts():
    rng = random.Random(0)
    for _ in range(300):
        earlier = [sample_constraint(rng, prompt=PROMPT)]
        # Only these two leave fewer than 3 mutually compatible types (json_format allows just the
        # two keyword types); every other start must succeed, however the greedy order would go.
        if earlier[0].type_id in ("detectable_format:json_format", "detectable_format:constrained_response"):
            with pytest.raises(ValueError):
                sample_constraints(rng, 3, prompt=PROMPT, avoid_conflicts_with=earlier)
            continue
        cs = sample_constraints(rng, 3, prompt=PROMPT, avoid_conflicts_with=earlier)
        assert len({c.type_id for c in cs}) == 3
        everything = earlier + cs
        for i, a in enumerate(everything):
            for b in everything[i + 1:]:
                assert not conflicts(a.type_id, b.type_id), (a, b)


def test_sampling_is_deterministic_and_covers_all_types():
    first = sample_constraints(random.Random(7), 3, prompt=PROMPT)
    assert first == sample_constraints(random.Random(7), 3, prompt=PROMPT)
    rng = random.Random(1)
    seen = {sample_constraint(rng, prompt=PROMPT).type_id for _ in range(2000)}
    assert seen == set(CONSTRAINT_TYPES)


def test_repeat_prompt_needs_a_prompt_and_impossible_requests_raise():
    rng = random.Random(0)
    for _ in range(200):
        assert sample_constraint(rng).type_id != "combination:repeat_prompt"
    with pytest.raises(ValueError):
        sample_constraints(rng, 2, type_ids=["detectable_format:constrained_response"])


def test_apply_and_check_all():
    cs = [Constraint("punctuation:no_comma", {}), Constraint("detectable_format:title", {})]
    full = apply_constraints(PROMPT, cs)
    assert full.startswith(PROMPT) and all(c.instruction() in full for c in cs)
    assert check_all(cs, "<<Press>>\nGutenberg built it")
    assert not check_all(cs, "<<Press>>\nGutenberg, in Mainz")


def test_keywords_may_come_from_the_prompt():
    rng = random.Random(3)
    drawn = {w for _ in range(200)
             for w in sample_constraint(rng, ["keywords:existence"], prompt=PROMPT).kwargs["keywords"]}
    assert drawn & {"history", "printing", "press", "europe"}
    assert not drawn & {"the", "of", "describe"}


@pytest.mark.parametrize("code,text", [
    ("en", "The weather was cold, so we stayed at home and read books all day."),
    ("fr", "Nous sommes restés à la maison parce qu'il faisait très froid dehors."),
    ("de", "Wir sind zu Hause geblieben, weil es draußen sehr kalt war und der Wind wehte."),
    ("es", "Nos quedamos en casa porque hacía mucho frío y no queríamos salir."),
    ("it", "Siamo rimasti a casa perché faceva molto freddo e non volevamo uscire."),
    ("pt", "Ficamos em casa porque estava muito frio e não queríamos sair."),
    ("ru", "Мы остались дома, потому что на улице было очень холодно."),
    ("zh-cn", "因为外面很冷，我们整天呆在家里看书。"),
    ("ja", "外はとても寒かったので、私たちは一日中家で本を読みました。"),
    ("ko", "밖이 너무 추워서 우리는 하루 종일 집에서 책을 읽었습니다."),
    ("ar", "بقينا في المنزل لأن الجو كان باردا جدا في الخارج."),
    ("hi", "बाहर बहुत ठंड थी इसलिए हम पूरे दिन घर पर रहे।"),
    ("nl", "We bleven thuis omdat het buiten erg koud was en de wind hard waaide."),
    ("pl", "Zostaliśmy w domu, ponieważ na zewnątrz było bardzo zimno i wiał silny wiatr."),
    ("tr", "Dışarısı çok soğuk olduğu için bütün gün evde kalıp kitap okuduk."),
    ("sv", "Vi stannade hemma eftersom det var mycket kallt ute och vinden blåste hårt."),
    ("vi", "Chúng tôi ở nhà cả ngày vì bên ngoài trời rất lạnh."),
    ("fa", "ما تمام روز در خانه ماندیم چون بیرون هوا خیلی سرد بود."),
    ("uk", "Ми залишилися вдома, бо надворі було дуже холодно і дув сильний вітер."),
])
def test_detect_language(code, text):
    assert detect_language(text) == code


def test_detect_language_undecidable_fails_the_language_checks():
    assert detect_language("") is None
    assert detect_language("42 17 ...") is None
    # IFEval counts an unreadable reply as following the instruction; here it follows none of them.
    assert not Constraint("language:response_language", {"language": "fr"}).check("42 17 ...")
    assert not Constraint("change_case:english_lowercase", {}).check("42 17 ...")


def test_every_ifeval_language_is_a_target():
    assert len(LANGUAGE_NAMES) == 30 and "zh" not in LANGUAGE_NAMES
    for code in LANGUAGE_NAMES:
        assert Constraint("language:response_language", {"language": code}).instruction()


def test_instruction_texts_never_say_fewer_than_once():
    cases = [("keywords:frequency", {"keyword": "tree", "frequency": 1, "relation": "less than"}),
             ("keywords:letter_frequency", {"letter": "q", "let_frequency": 1, "let_relation": "less than"}),
             ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "less than"})]
    for type_id, kwargs in cases:
        text = Constraint(type_id, kwargs).instruction()
        assert "fewer than once" not in text and "not" in text, text
    rng = random.Random(0)
    for _ in range(500):
        assert "fewer than once" not in sample_constraint(rng, prompt=PROMPT).instruction()


def test_the_pronoun_i_is_no_capital_word():
    at_least = Constraint("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"})
    assert not at_least.check("I think NASA is great.")  # IFEval counts "I" and passes this
    assert at_least.check("I think NASA and ESA are great.")
    # As an upper bound "I" counts, as in IFEval: passing here must mean passing there.
    less_than = Constraint("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"})
    assert not less_than.check("I think NASA is great.")
    assert less_than.check("We think NASA is great.")


def test_empty_response_follows_nothing():
    for type_id in CONSTRAINT_TYPES:
        c = sample_constraint(random.Random(0), [type_id], prompt=PROMPT)
        assert not c.check("") and not c.check(" \n\t ") and not c.check_loose("\n\n")


def test_count_sentences_and_word_tokens_are_nltk():
    assert count_sentences("") == 0
    assert count_sentences("Hello world") == 1
    assert count_sentences("Mr. J. Smith paid $3.50 for it. Then he left!") == 2
    assert count_sentences("我很好。你呢？") == 1  # Punkt's English model knows no CJK full stop
    assert word_tokens("I'M WELL-KNOWN, Dr. Smith.") == ["I", "'M", "WELL-KNOWN", ",", "Dr.", "Smith", "."]


def test_keywords_must_be_plain_words():
    # IFEval hands keywords to `re` unescaped; a keyword with regex syntax would be checked differently.
    for bad in (["c++"], ["a.b"], [" art"], ["x|y"]):
        with pytest.raises(ValueError, match="keywords must be words"):
            Constraint("keywords:existence", {"keywords": bad})
    Constraint("keywords:forbidden_words", {"forbidden_words": ["well-known", "don't", "New York"]})
