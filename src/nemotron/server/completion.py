"""From engine outputs to what the OpenAI API reports for one choice: its text and its tokens.

The engine's output tracker (`engine/output.py`) already gives the text decoded in the prompt's
context and cut at stop strings, with the shown tokens that add up to it; here the engine's step
outputs are only tagged with their choice, merged across choices and checked against the context.
"""
from __future__ import annotations

from nemotron.engine.llm_engine import StepOutput
from nemotron.server.errors import bad_request

LOGPROB_FLOOR = -9999.0  # JSON has no -Infinity; a token the model rules out is reported with this


def finite(logprob: float) -> float:
    return logprob if logprob >= LOGPROB_FLOOR else LOGPROB_FLOOR  # also maps NaN to the floor


Choice = tuple[int, StepOutput]  # a choice's index and what one engine step added to it


def check_context(prompt_tokens: int, new_tokens: int, context: int, field_name: str) -> None:
    if prompt_tokens + new_tokens > context:
        raise bad_request(
            f"the prompt has {prompt_tokens} tokens and {field_name} asks for {new_tokens} more, "
            f"{prompt_tokens + new_tokens} in all; the model's context is {context} tokens", field_name)
