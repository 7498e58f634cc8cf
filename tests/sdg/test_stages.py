"""Every stage kind on scripted in-process models: what it asks, what records it makes, what it
rejects and why."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from nemotron.sdg.filters import reward_scalar

from nemotron.sdg.config import parse_config
from nemotron.sdg.constraints import Constraint
from nemotron.sdg.pipeline import Pipeline
from nemotron.sdg.stages import parse_verdict, parse_yes_no, strip_polite_filler
from nemotron.sdg.store import read_jsonl
from tests.sdg.fake_server import ScriptedChat, ScriptedReward, digest, scripted_reply

MODELS = {"generator": {"model": "scripted"}, "reward": {"model": "reward", "kind": "reward"}}


def run(tmp_path, stages, chat=None, reward=None, **extra):
    config = parse_config({"name": "t", "models": MODELS, "stages": stages, **extra})
    backends = {"generator": chat or ScriptedChat(), "reward": reward or ScriptedReward()}
    summary = asyncio.run(Pipeline(config, tmp_path, backends, progress=False).run())
    return summary, lambda name: list(read_jsonl(tmp_path / "data" / f"{name}.jsonl"))


def rejected(tmp_path, name):
    return list(read_jsonl(tmp_path / "rejected" / f"{name}.jsonl"))


def test_topics_subtopics_questions_chain(tmp_path):
    summary, data = run(tmp_path, [
        {"name": "topics", "kind": "macro_topics", "count": 3},
        {"name": "subs", "kind": "subtopics", "count": 2},
        {"name": "qs", "kind": "open_questions", "count": 2},
    ])
    topics, subs, qs = data("topics"), data("subs"), data("qs")
    assert len(topics) == 3 and len(subs) == 6 and len(qs) == 12
    assert subs[0]["parent_topic"] == topics[0]["topic"] and subs[0]["parent"] == topics[0]["id"]
    assert qs[0]["topic"] == subs[0]["topic"] and qs[0]["prompt"].startswith("item ")
    assert summary["stages"]["qs"]["parse"]["by_method"] == {"numbered": 6}
    assert summary["stages"]["qs"]["usage"]["calls"] == 6 and summary["stages"]["topics"]["units"] == 1
    assert len({r["id"] for r in qs}) == 12


def test_unparseable_list_is_reformatted_and_invented_items_dropped(tmp_path):
    def reply(messages, seed):
        prompt = messages[-1]["content"]
        if "JSON array" in prompt:
            return '["chess openings", "card games", "invented topic"]'
        return "Some ideas: chess openings, and also card games."

    summary, data = run(tmp_path, [{"name": "topics", "kind": "macro_topics", "count": 5}], chat=ScriptedChat(reply))
    assert [r["topic"] for r in data("topics")] == ["chess openings", "card games"]
    assert summary["stages"]["topics"]["parse"] == {"by_method": {"reformat": 1}, "failures": 0, "items": 2, "rejected_items": 1}
    assert summary["stages"]["topics"]["rejections"] == {"ungrounded item": 1}
    assert rejected(tmp_path, "topics")[0]["text"] == "invented topic"


def test_parse_failure_is_counted_not_fatal(tmp_path):
    chat = ScriptedChat(lambda messages, seed: "I cannot help with lists today.")
    summary, data = run(tmp_path, [
        {"name": "topics", "kind": "macro_topics", "count": 5, "calls": 2},
        {"name": "qs", "kind": "open_questions"},
    ], chat=chat)
    assert data("topics") == [] and summary["stages"]["topics"]["units_done"] == 2
    assert summary["stages"]["topics"]["parse"]["failures"] == 2 and summary["stages"]["topics"]["rejections"] == {"parse failure": 2}
    assert summary["stages"]["qs"]["inputs"] == 0
    assert len(chat.calls) == 4  # each failure tried the reformatting fallback once


def test_classifier_keeps_yes_and_reports_no_and_junk(tmp_path):
    answers = {"algebra": "Yes.", "poetry": "No", "chess": "Maybe?"}
    chat = ScriptedChat(lambda m, s: answers[re.search(r'"(\w+)"', m[-1]["content"]).group(1)])
    summary, data = run(tmp_path, [
        {"name": "seeds", "kind": "seeds", "items": ["algebra", "poetry", "chess"]},
        {"name": "math", "kind": "classify", "domain": "math"},
    ], chat=chat)
    assert [r["topic"] for r in data("math")] == ["algebra"] and data("math")[0]["domain"] == "math"
    assert summary["stages"]["math"]["rejections"] == {"classified no": 1, "unparseable verdict": 1}
    assert "mathematics" in chat.calls[0][0][-1]["content"]
    assert chat.calls[0][1].temperature == 0.0  # the classifier decodes greedily by default


def test_problems_per_level_and_writing_tasks_per_document_type(tmp_path):
    summary, data = run(tmp_path, [
        {"name": "seeds", "kind": "seeds", "items": ["fractions", "sorting"]},
        {"name": "math", "kind": "problems", "domain": "math", "levels": ["middle school", "university"], "count": 2},
        {"name": "py", "kind": "problems", "input": "seeds", "domain": "python", "count": 1},
        {"name": "writing", "kind": "writing_tasks", "input": "seeds", "document_types": ["poem", "email"], "count": 1},
    ])
    math = data("math")
    assert len(math) == 8 and {r["level"] for r in math} == {"middle school", "university"}
    assert len(data("py")) == 6 and {r["level"] for r in data("py")} == {"beginner", "intermediate", "advanced"}
    assert sorted(r["document_type"] for r in data("writing")) == ["email", "email", "poem", "poem"]


def test_revise_and_closed_qa(tmp_path):
    def reply(m, s):
        if "Rewrite" not in m[-1]["content"]:
            return scripted_reply(m, s)
        # Revisions 1 and 3 keep the subject; revision 2 drifts to another one.
        return ['"Why does the sky look blue at noon?"', "Describe a cat.", "Why is the sky blue to our eyes?"][s % 3]

    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Why is the sky blue?"], "field": "prompt"},
        {"name": "rev", "kind": "revise", "keep_original": True, "n": 6},
        {"name": "docs", "kind": "seeds", "items": ["The Nile is 6650 km long."], "field": "document"},
        {"name": "qa", "kind": "closed_qa", "count": 2},
    ], chat=ScriptedChat(reply))
    prompts = [r["prompt"] for r in data("rev")]
    assert prompts[0] == "Why is the sky blue?" and all(r["original"] == prompts[0] for r in data("rev")[1:])
    assert 2 <= len(prompts) <= 3 and "Describe a cat." not in prompts  # 6 revisions, distinct related ones kept
    assert summary["stages"]["rev"]["rejections"]["unrelated revision"] >= 1
    qa = data("qa")
    assert len(qa) == 2 and qa[0]["prompt"].startswith("The Nile is 6650 km long.\n\n") and qa[0]["instruction"]


def test_relatedness_of_a_revision():
    from nemotron.sdg.stages.prompts import relatedness

    original = "What is the role of central banks in the economy?"
    assert relatedness(original, "How do central banks steer economic growth and inflation?") >= 0.5
    assert relatedness(original, "Write a poem about cats sleeping in the sun.") == 0.0
    assert relatedness("Why?", "anything") == 1.0  # nothing to compare


def test_seeds_from_jsonl_file_relative_to_config(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "math.jsonl").write_text('{"prompt": "What is 2+2?", "answer": "4"}\n'
                                                 '{"prompt": "1+1?", "answer": "2"}\n')
    config = parse_config({"name": "t", "models": MODELS, "stages": [
        {"name": "s", "kind": "seeds", "path": "math.jsonl", "field": "prompt"}]})
    asyncio.run(Pipeline(config, tmp_path / "out", {}, base_dir=tmp_path / "cfg", progress=False).run())
    records = list(read_jsonl(tmp_path / "out" / "data" / "s.jsonl"))
    assert [(r["prompt"], r["answer"]) for r in records] == [("What is 2+2?", "4"), ("1+1?", "2")]


def test_instruction_following_single_turn(tmp_path):
    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Describe a cat.", "Describe a dog."], "field": "prompt"},
        {"name": "ifp", "kind": "instruction_following", "constraints": 2},
    ])
    for record in data("ifp"):
        constraints = [Constraint.from_dict(c) for c in record["constraints"]]
        assert len(constraints) == 2
        assert record["prompt"].startswith(record["base_prompt"])
        assert all(c.instruction() in record["prompt"] for c in constraints)


def test_instruction_following_multi_turn_and_checked_responses(tmp_path):
    def reply(messages, seed):
        prompt = messages[-1]["content"]
        if "next message" in prompt:
            return "Thanks! Now describe its tail."
        return "a reply, with a comma" if "tail" in prompt else "a reply without any punctuation"

    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Describe a cat."], "field": "prompt"},
        {"name": "ifp", "kind": "instruction_following", "types": ["punctuation:no_comma"], "multi_turn": True},
        {"name": "answers", "kind": "responses"},
    ], chat=ScriptedChat(reply))
    conversation = data("ifp")[0]["messages"]
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
    assert "every later reply" in conversation[0]["content"] and conversation[2]["content"] == "Now describe its tail."
    assert data("answers") == []  # the reply to the follow-up broke the conversation's constraint
    assert summary["stages"]["answers"]["rejections"] == {"constraint not met": 1}


def test_two_turn_prompts(tmp_path):
    chat = ScriptedChat(lambda m, s: "What else?" if "next message" in m[-1]["content"] else "An answer.")
    _, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Tell me about owls."], "field": "prompt"},
        {"name": "two", "kind": "two_turn"},
        {"name": "answers", "kind": "responses", "n": 2, "reward_model": "reward",
         "filters": {"dedup": False}},
    ], chat=chat)
    assert [m["content"] for m in data("two")[0]["messages"]] == ["Tell me about owls.", "An answer.", "What else?"]
    answers = data("answers")
    assert len(answers) == 2 and answers[0]["messages"][-1] == {"role": "assistant", "content": "An answer."}
    assert set(answers[0]["reward"]) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}


def test_dialogues_three_user_turns_filler_removed_and_reward_filtered(tmp_path):
    def reply(messages, seed):
        prompt = messages[-1]["content"]
        if "You are playing the user" in prompt:
            turn = prompt.count("\n\nUser: ") + 1
            return f"Thank you so much, that was really helpful! Can you expand on point {turn}?"
        return f"Assistant answer {digest(messages)[:6]}."

    high = lambda messages: dict.fromkeys(("helpfulness", "correctness", "coherence", "complexity", "verbosity"), 3.5)
    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Thanks! How do tides work?"], "field": "prompt"},
        {"name": "dlg", "kind": "dialogues", "reward_model": "reward", "personas": ["a sailor"],
         "filters": {"min_reward": {"helpfulness": 3.0}}},
    ], chat=ScriptedChat(reply), reward=ScriptedReward(high))
    dialogue = data("dlg")[0]
    assert [m["role"] for m in dialogue["messages"]] == ["user", "assistant"] * 3
    users = [m["content"] for m in dialogue["messages"] if m["role"] == "user"]
    assert users == ["How do tides work?", "Can you expand on point 2?", "Can you expand on point 3?"]
    assert dialogue["persona"] == "a sailor" and dialogue["reward"]["helpfulness"] == 3.5

    low = lambda messages: dict.fromkeys(("helpfulness", "correctness", "coherence", "complexity", "verbosity"), 1.0)
    summary, data = run(tmp_path / "low", [
        {"name": "q", "kind": "seeds", "items": ["How do tides work?"], "field": "prompt"},
        {"name": "dlg", "kind": "dialogues", "reward_model": "reward", "filters": {"min_reward": {"helpfulness": 3.0}}},
    ], chat=ScriptedChat(reply), reward=ScriptedReward(low))
    assert data("dlg") == [] and summary["stages"]["dlg"]["rejections"] == {"reward filter": 1}
    assert "helpfulness 1.000 < min 3" in rejected(tmp_path / "low", "dlg")[0]["detail"]


def test_preference_by_math_ground_truth(tmp_path):
    chat = ScriptedChat(lambda m, seed: f"So the answer is {4 if seed % 2 else 5}.")
    (tmp_path / "m.jsonl").write_text('{"prompt": "2+2?", "answer": "4"}\n')
    config = parse_config({"name": "t", "models": MODELS, "stages": [
        {"name": "s", "kind": "seeds", "path": str(tmp_path / "m.jsonl"), "field": "prompt"},
        {"name": "pairs", "kind": "preference", "n": 6}]})
    asyncio.run(Pipeline(config, tmp_path, {"generator": chat}, progress=False).run())
    pair = list(read_jsonl(tmp_path / "data" / "pairs.jsonl"))[0]
    assert pair["chosen"] == [{"role": "assistant", "content": "So the answer is 4."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "So the answer is 5."}]
    assert (pair["chosen_judge_score"], pair["rejected_judge_score"], pair["judge"]) == (1.0, 0.0, "ground_truth")
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (None, None)  # no reward model: no reward
    assert pair["prompt"] == [{"role": "user", "content": "2+2?"}]


def test_preference_by_reference_reply(tmp_path):
    replies = ("The capital of France is Paris.", "The capital of France is Paris. Berlin is in Germany.",
               "The capital of France is Lyon.")
    chat = ScriptedChat(lambda m, seed: replies[seed % 3])
    (tmp_path / "f.jsonl").write_text('{"prompt": "What is the capital of France?", '
                                      '"reference": "The capital of France is Paris.", "category": "countries"}\n')
    config = parse_config({"name": "t", "models": MODELS, "stages": [
        {"name": "s", "kind": "seeds", "path": str(tmp_path / "f.jsonl"), "field": "prompt"},
        {"name": "pairs", "kind": "preference", "n": 6}]})
    asyncio.run(Pipeline(config, tmp_path, {"generator": chat}, progress=False).run())
    pair = list(read_jsonl(tmp_path / "data" / "pairs.jsonl"))[0]
    assert pair["chosen"][0]["content"] == replies[0] and pair["rejected"][0]["content"] != replies[0]
    assert pair["judge"] == "ground_truth" and pair["category"] == "countries"


def test_preference_by_constraint_checker(tmp_path):
    chat = ScriptedChat(lambda m, seed: "no commas here" if seed % 2 else "commas, here")
    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Write a line."], "field": "prompt"},
        {"name": "ifp", "kind": "instruction_following", "types": ["punctuation:no_comma"]},
        {"name": "pairs", "kind": "preference", "n": 6, "reward_model": "reward"},
    ], chat=chat)
    pair = data("pairs")[0]
    assert pair["chosen"][0]["content"] == "no commas here" and pair["judge"] == "ground_truth"
    assert set(pair["chosen_scores"]) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    # The rewards are the reward model's (one scale for every row), the checker's verdict apart.
    assert pair["chosen_reward"] == pytest.approx(reward_scalar(pair["chosen_scores"]))
    assert pair["rejected_reward"] == pytest.approx(reward_scalar(pair["rejected_scores"]))
    assert (pair["chosen_judge_score"], pair["rejected_judge_score"]) == (1.0, 0.0)


def test_preference_by_reward_model(tmp_path):
    scores = lambda m: dict.fromkeys(("helpfulness", "correctness", "coherence", "complexity"),
                                     float(m[-1]["content"][-1])) | {"verbosity": 0.0}
    chat = ScriptedChat(lambda m, seed: f"reply {seed % 3}")
    summary, data = run(tmp_path, [
        {"name": "q", "kind": "seeds", "items": ["Q1", "Q2"], "field": "prompt"},
        {"name": "pairs", "kind": "preference", "n": 6, "reward_model": "reward", "min_margin": 0.5},
    ], chat=chat, reward=ScriptedReward(scores))
    for pair in data("pairs"):
        assert pair["judge"] == "reward" and pair["chosen_reward"] > pair["rejected_reward"] + 0.5
        assert pair["chosen"][0]["content"] == "reply 2" and pair["rejected"][0]["content"] == "reply 0"
        assert pair["chosen_reward"] == pytest.approx((0.3 + 0.74 + 0.46 + 0.47) * 2)
        assert pair["chosen_judge_score"] == pair["chosen_reward"]


def test_llm_judge_kept_only_when_both_orders_agree(tmp_path):
    stages = [{"name": "q", "kind": "seeds", "items": ["Q1", "Q2", "Q3"], "field": "prompt"},
              {"name": "pairs", "kind": "preference", "judges": ["llm"]}]
    fair = ScriptedChat()  # prefers the lexicographically larger reply, wherever it stands
    summary, data = run(tmp_path / "fair", stages, chat=fair)
    pairs = data("pairs")
    assert len(pairs) == 3 and all(p["chosen"][0]["content"] > p["rejected"][0]["content"] and p["judge"] == "llm"
                                   for p in pairs)
    judge_calls = [s for m, s in fair.calls if "one letter" in m[-1]["content"]]
    assert len(judge_calls) == 6 and all(s.temperature == 0.0 for s in judge_calls)

    biased = ScriptedChat(lambda m, s: "A" if "one letter" in m[-1]["content"] else scripted_reply(m, s))
    summary, data = run(tmp_path / "biased", stages, chat=biased)
    assert data("pairs") == [] and summary["stages"]["pairs"]["rejections"] == {"judge disagreement": 3}

    same = ScriptedChat(lambda m, s: "identical")
    summary, _ = run(tmp_path / "same", stages, chat=same)
    assert summary["stages"]["pairs"]["rejections"] == {"identical replies": 3}


def test_small_parsers():
    assert parse_yes_no("Yes, it is.") is True and parse_yes_no("**no**") is False and parse_yes_no("Perhaps") is None
    assert parse_verdict("B") == "B" and parse_verdict("Reply A is better") == "A" and parse_verdict("**a**") == "A"
    assert parse_verdict("Both are fine") is None
    assert strip_polite_filler("Thanks a lot! How do magnets work?") == "How do magnets work?"
    assert strip_polite_filler("Great explanation, thank you.") == ""
    assert strip_polite_filler("I see. Why is that?") == "Why is that?"
    assert strip_polite_filler("Why is that? That makes sense, thanks!") == "Why is that?"
    assert strip_polite_filler("That's helpful for my thesis, but how do I cite it?") == \
        "That's helpful for my thesis, but how do I cite it?"


def test_record_seeds_are_per_unit_and_call(tmp_path):
    chat = ScriptedChat()
    run(tmp_path, [{"name": "q", "kind": "seeds", "items": ["A", "B"], "field": "prompt"},
                   {"name": "r", "kind": "responses", "n": 2}], chat=chat)
    seeds = [s.seed for _, s in chat.calls]
    assert len(set(seeds)) == 4
    again = ScriptedChat()
    run(tmp_path / "again", [{"name": "q", "kind": "seeds", "items": ["A", "B"], "field": "prompt"},
                             {"name": "r", "kind": "responses", "n": 2}], chat=again)
    assert sorted(seeds) == sorted(s.seed for _, s in again.calls)
    assert json.dumps(sorted(map(str, seeds)))  # plain ints, JSON-safe


def test_math_and_python_topic_prompts(tmp_path):
    chat = ScriptedChat()
    summary, data = run(tmp_path, [
        {"name": "areas", "kind": "macro_topics", "count": 2, "domain": "math"},
        {"name": "subs", "kind": "subtopics", "count": 2, "domain": "math"},
        {"name": "py", "kind": "macro_topics", "count": 2, "domain": "python"},
        {"name": "pysubs", "kind": "subtopics", "input": "py", "count": 2, "domain": "python"},
    ], chat=chat)
    prompts = [m[-1]["content"] for m, _ in chat.calls]
    assert sum("broad areas of mathematics" in p for p in prompts) == 1
    assert sum("within the mathematical area" in p for p in prompts) == 2
    assert sum("broad areas of Python programming" in p for p in prompts) == 1
    assert sum("within the Python programming area" in p for p in prompts) == 2
    assert {r["domain"] for r in data("areas")} == {"math"} and len(data("pysubs")) == 4
    with pytest.raises(Exception, match="domain must be one of"):
        run(tmp_path / "bad", [{"name": "a", "kind": "macro_topics", "domain": "chemistry"}])


def test_reference_answers_let_preference_judge_generated_math_by_ground_truth(tmp_path):
    def reply(messages, seed):
        prompt = messages[-1]["content"]
        if "numbered list" in prompt:
            return "1. What is 2 + 2?\n2. What is the largest prime below 10?"
        if prompt.startswith("Solve the following problem"):
            # Every solution of the first problem agrees; those of the second disagree.
            return "2 + 2 = 4, so \\boxed{4}" if "2 + 2" in prompt else f"I think \\boxed{{{seed % 7}}}"
        return f"So the answer is {4 if seed % 2 else 5}."

    summary, data = run(tmp_path, [
        {"name": "t", "kind": "seeds", "items": ["arithmetic"]},
        {"name": "problems", "kind": "problems", "domain": "math", "levels": ["elementary school"], "count": 2,
         "reference_answers": True, "answer_samples": 3},
        {"name": "pairs", "kind": "preference", "n": 6},
    ], chat=ScriptedChat(reply))
    problems = data("problems")
    assert [(p["prompt"], p["answer"]) for p in problems] == [("What is 2 + 2?", "4")]
    assert "\\boxed{4}" in problems[0]["solution"]
    assert summary["stages"]["problems"]["rejections"] == {"no agreed answer": 1}
    pair = data("pairs")[0]
    assert pair["judge"] == "ground_truth" and pair["chosen"][0]["content"] == "So the answer is 4."
    with pytest.raises(Exception, match="reference_answers are for math"):
        run(tmp_path / "py", [{"name": "t", "kind": "seeds", "items": ["x"]},
                              {"name": "p", "kind": "problems", "domain": "python", "reference_answers": True}])


def test_a_separate_user_model_plays_the_user(tmp_path):
    assistant = ScriptedChat(lambda m, s: "assistant says hi")
    user = ScriptedChat(lambda m, s: "user asks more", model="user-model")
    config = parse_config({"name": "t", "models": {**MODELS, "user": {"model": "user-model"}}, "stages": [
        {"name": "q", "kind": "seeds", "items": ["Hello?"], "field": "prompt"},
        {"name": "dlg", "kind": "dialogues", "user_turns": 3, "user_model": "user"},
        {"name": "two", "kind": "two_turn", "input": "q", "user_model": "user"}]})
    asyncio.run(Pipeline(config, tmp_path, {"generator": assistant, "user": user}, progress=False).run())
    dialogue = list(read_jsonl(tmp_path / "data" / "dlg.jsonl"))[0]["messages"]
    assert [m["content"] for m in dialogue] == ["Hello?", "assistant says hi", "user asks more", "assistant says hi",
                                                "user asks more", "assistant says hi"]
    assert len(user.calls) == 3 and len(assistant.calls) == 4  # 2 user turns + 1 follow-up; 3 + 1 replies
    two = list(read_jsonl(tmp_path / "data" / "two.jsonl"))[0]["messages"]
    assert two[-1] == {"role": "user", "content": "user asks more"}
