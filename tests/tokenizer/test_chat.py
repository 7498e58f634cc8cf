import pytest

from nemotron.errors import NemotronError
from nemotron.tokenizer import (
    CHAT_STOP,
    REWARD_SYSTEM_PROMPT,
    ChatFormatError,
    Message,
    render_chat,
    render_reward_prompt,
    strip_stop,
)

# The single-turn template of the Nemotron-4-340B-Instruct model card's client (call_server.py).
MODEL_CARD_TEMPLATE = """<extra_id_0>System

<extra_id_1>User
{prompt}
<extra_id_1>Assistant
"""


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def test_single_turn_matches_the_model_card():
    question = "Write a poem on NVIDIA in the style of Shakespeare"
    expected = MODEL_CARD_TEMPLATE.format(prompt=question)
    assert render_chat([user(question)]) == expected
    assert render_chat([system(""), user(question)]) == expected


def test_system_prompt():
    assert render_chat([system("Be brief."), user("Hi")]) == (
        "<extra_id_0>System\nBe brief.\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\n")


def test_multi_turn():
    messages = [user("Hi"), assistant("Hello!"), user("Tell me a joke.")]
    assert render_chat(messages) == (
        "<extra_id_0>System\n\n"
        "<extra_id_1>User\nHi\n<extra_id_1>Assistant\nHello!\n"
        "<extra_id_1>User\nTell me a joke.\n<extra_id_1>Assistant\n")


def test_without_generation_prompt():
    messages = [user("Hi"), assistant("Hello!")]
    assert render_chat(messages, add_generation_prompt=False) == (
        "<extra_id_0>System\n\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\nHello!\n")
    assert render_chat([user("Hi")], add_generation_prompt=False) == "<extra_id_0>System\n\n<extra_id_1>User\nHi\n"


def test_message_objects_and_text_parts():
    expected = render_chat([system("S"), user("Hi there")])
    assert render_chat([Message("system", "S"), Message("user", "Hi there")]) == expected
    parts = [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]
    assert render_chat([system("S"), {"role": "user", "content": parts}]) == expected


@pytest.mark.parametrize("messages, match", [
    ([], "no user message"),
    ([system("S")], "no user message"),
    ([assistant("Hello")], "start.*with user"),
    ([user("a"), user("b")], "message 1 is 'user' where 'assistant'"),
    ([system("S"), user("a"), assistant("b"), assistant("c")], "message 3 is 'assistant' where 'user'"),
    ([user("a"), system("S")], "system message may only come first"),
    ([{"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user"}], "no text 'content'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "only text content parts"),
    (["hello"], "not an object"),
    ([user("a"), assistant("b")], "last message must be the user's"),
])
def test_invalid_conversations(messages, match):
    with pytest.raises(ChatFormatError, match=match) as error:
        render_chat(messages)
    assert isinstance(error.value, ValueError) and isinstance(error.value, NemotronError)


def test_reward_prompt():
    messages = [user("What is 2+2?"), assistant("4")]
    assert render_reward_prompt(messages) == (
        f"<extra_id_0>System\n{REWARD_SYSTEM_PROMPT}\n"
        "<extra_id_1>User\nWhat is 2+2?\n<extra_id_1>Assistant\n4\n<extra_id_2>")
    assert render_reward_prompt([system(""), *messages]) == (
        "<extra_id_0>System\n\n<extra_id_1>User\nWhat is 2+2?\n<extra_id_1>Assistant\n4\n<extra_id_2>")
    assert render_reward_prompt([system("own"), *messages], system="given").startswith(
        "<extra_id_0>System\ngiven\n<extra_id_1>User\n")


def test_reward_prompt_of_a_dialogue_scores_the_last_reply():
    messages = [user("a"), assistant("b"), user("c"), assistant("d")]
    prompt = render_reward_prompt(messages, system="")
    assert prompt == render_chat(messages, add_generation_prompt=False) + "<extra_id_2>"
    with pytest.raises(ChatFormatError, match="last message must be the assistant's"):
        render_reward_prompt(messages[:3])


def test_strip_stop():
    assert CHAT_STOP == "<extra_id_1>"
    assert strip_stop("Hello!<extra_id_1>") == "Hello!"
    assert strip_stop("Hello!\n<extra_id_1><extra_id_1>") == "Hello!\n<extra_id_1>"
    assert strip_stop("a <extra_id_1> b") == "a <extra_id_1> b"
    assert strip_stop("no stop\n") == "no stop\n"
