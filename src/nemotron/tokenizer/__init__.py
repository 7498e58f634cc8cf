"""Tokenizers (SentencePiece or tokenizer.json) and the Nemotron chat format."""
from nemotron.tokenizer.chat import (
    CHAT_STOP,
    CHAT_STOP_STRINGS,
    REWARD_SYSTEM_PROMPT,
    REWARD_TOKEN,
    SYSTEM_TOKEN,
    TURN_TOKEN,
    ChatFormatError,
    ChatPrompt,
    Message,
    render_chat,
    render_reward_prompt,
    strip_stop,
)
from nemotron.tokenizer.tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "CHAT_STOP",
    "CHAT_STOP_STRINGS",
    "REWARD_SYSTEM_PROMPT",
    "REWARD_TOKEN",
    "SYSTEM_TOKEN",
    "TURN_TOKEN",
    "ChatFormatError",
    "ChatPrompt",
    "Message",
    "StreamDecoder",
    "Tokenizer",
    "render_chat",
    "render_reward_prompt",
    "strip_stop",
]
