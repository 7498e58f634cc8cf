"""The Nemotron-4 Instruct chat format and the Reward model's prompt.

    <extra_id_0>System\\n{system}\\n
    <extra_id_1>User\\n{user}\\n<extra_id_1>Assistant\\n{assistant}\\n   (per turn)
    <extra_id_1>Assistant\\n                                             (to generate a reply)

Templates as in the Nemotron-4-340B-Instruct model card ("Prompt Format") and NeMo-Aligner's
examples/nlp/data/steerlm/common.py.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nemotron.errors import NemotronError

SYSTEM_TOKEN = "<extra_id_0>"
TURN_TOKEN = "<extra_id_1>"
REWARD_TOKEN = "<extra_id_2>"
CHAT_STOP = TURN_TOKEN  # the Instruct model ends its turn by starting the next one
# The Instruct model ends a turn with "\n<extra_id_1>"; stopping at either spelling (the longer one
# matches first) keeps the template's newline out of the reply.
CHAT_STOP_STRINGS = ("\n" + CHAT_STOP, CHAT_STOP)

# The system prompt NeMo-Aligner's SteerLM scripts put in every reward-model training and scoring
# prompt (common.py SYSTEM_PROMPT; process_to_regression_format.py, attribute_annotate.py), which
# the Nemotron-4-340B-Reward model card points to for inference.
REWARD_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                        "The assistant gives helpful, detailed, and polite answers to the user's questions.")

_ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


class ChatFormatError(NemotronError, ValueError):
    """Messages that do not form a valid conversation (a client error: HTTP 400)."""


class ChatPrompt(str):
    """A rendered prompt that remembers which of its characters came from message contents:
    `parts` holds (text, is_template) pairs that add up to the string. `Tokenizer.encode` turns
    special tokens into their ids only inside template text, so an `<extra_id_1>` typed in a
    message stays text and cannot forge a turn. Any string operation returns a plain `str`."""

    parts: tuple[tuple[str, bool], ...]

    def __new__(cls, parts: list[tuple[str, bool]]) -> ChatPrompt:
        prompt = super().__new__(cls, "".join(text for text, _ in parts))
        prompt.parts = tuple((text, template) for text, template in parts if text)
        return prompt

    def __getnewargs__(self) -> tuple[list[tuple[str, bool]]]:  # pickle and copy rebuild from the parts
        return (list(self.parts),)

    def then(self, template_text: str) -> ChatPrompt:
        """This prompt followed by more template text (e.g. the CHAT_STOP that ends a trained reply)."""
        return ChatPrompt([*self.parts, (template_text, True)])

    def head(self, length: int) -> ChatPrompt:
        """The first `length` characters, still knowing which of them are message content."""
        parts, left = [], length
        for text, template in self.parts:
            if left <= 0:
                break
            parts.append((text[:left], template))
            left -= len(text)
        return ChatPrompt(parts)


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "system" (first message only), "user" or "assistant"
    content: str


def render_chat(messages: Sequence[Mapping | Message], add_generation_prompt: bool = True) -> ChatPrompt:
    """The prompt for a conversation; with `add_generation_prompt` it ends where the assistant's
    reply begins (the last message must then be the user's)."""
    system, turns = _validate(messages)
    if add_generation_prompt and turns[-1].role != "user":
        raise ChatFormatError("the last message must be the user's when a reply is to be generated")
    parts = _render(system, turns)
    return ChatPrompt(parts + [(f"{TURN_TOKEN}Assistant\n" if add_generation_prompt else "", True)])


def render_reward_prompt(messages: Sequence[Mapping | Message], system: str | None = None) -> ChatPrompt:
    """The Reward model's input: the conversation, ending with the assistant turn to score, then
    `<extra_id_2>` with no newline. The model reads its scores from that last token.

    Format from NeMo-Aligner examples/nlp/data/steerlm/common.py (LABEL_PREFIX = "<extra_id_2>")
    and process_to_regression_format.py / attribute_annotate.py (prompt text + LABEL_PREFIX).
    The system prompt is `system` if given, else the conversation's own, else the SteerLM prompt
    the model was trained with (REWARD_SYSTEM_PROMPT)."""
    own_system, turns = _validate(messages)
    if turns[-1].role != "assistant":
        raise ChatFormatError("the reward model scores an assistant reply; the last message must be the "
                              "assistant's")
    if system is None:
        system = own_system if own_system is not None else REWARD_SYSTEM_PROMPT
    return ChatPrompt(_render(system, turns) + [(REWARD_TOKEN, True)])


def strip_stop(text: str) -> str:
    """Drop one trailing `<extra_id_1>`, as the model card's client does with the server's reply."""
    return text[:-len(CHAT_STOP)] if text.endswith(CHAT_STOP) else text


def _render(system: str | None, turns: list[Message]) -> list[tuple[str, bool]]:
    """(text, is_template) parts; message contents (system prompt included) are not template."""
    parts = [(f"{SYSTEM_TOKEN}System\n", True), (system or "", False)]
    for m in turns:
        parts += [(f"\n{TURN_TOKEN}{_ROLE_NAMES[m.role]}\n", True), (m.content, False)]
    return parts + [("\n", True)]


def _validate(messages: Sequence[Mapping | Message]) -> tuple[str | None, list[Message]]:
    """(system prompt or None, the user/assistant turns), checking roles alternate from the user."""
    parsed = [_message(m, k) for k, m in enumerate(messages)]
    system = None
    if parsed and parsed[0].role == "system":
        system, parsed = parsed[0].content, parsed[1:]
    if not parsed:
        raise ChatFormatError("the conversation has no user message")
    for k, message in enumerate(parsed):
        expected = "user" if k % 2 == 0 else "assistant"
        if message.role == "system":
            raise ChatFormatError("a system message may only come first")
        if message.role != expected:
            raise ChatFormatError(f"roles must alternate user/assistant starting with user; message "
                                  f"{k + (system is not None)} is '{message.role}' where '{expected}' was expected")
    return system, parsed


def _message(message: Mapping | Message, index: int) -> Message:
    if isinstance(message, Message):
        role, content = message.role, message.content
    elif isinstance(message, Mapping):
        role, content = message.get("role"), message.get("content")
    else:
        raise ChatFormatError(f"message {index} is not an object with 'role' and 'content'")
    if role not in ("system", "user", "assistant"):
        raise ChatFormatError(f"message {index} has role {role!r}; expected 'system', 'user' or 'assistant'")
    if isinstance(content, list):  # OpenAI content parts: only text can be rendered
        if not all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ChatFormatError(f"message {index}: only text content parts are supported")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ChatFormatError(f"message {index} has no text 'content'")
    return Message(role, content)
