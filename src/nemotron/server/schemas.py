"""The request bodies of the three APIs as pydantic models: the one validation of every request,
and the source of `/openapi.json`.

Every field is type- and range-checked here; a failure is a 400 naming the field (params.py words
it). Checks that need the model (the context, the vocabulary) or the server's settings stay with
the handlers. An unknown field is a 400 ("Unrecognized request argument supplied: max_token", in
OpenAI's words): a misspelt knob would otherwise be dropped without a word (NeMo's server logs its
unknown keys and goes on). OpenAI fields that ask for nothing this server does not do are accepted
(metadata, service_tier, tool_choice "none", ...); asking for more is a 400 naming the field.
Integers may be written as integral floats (5.0), as JSON Schema's "integer" allows; strings are
never coerced to numbers.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from nemotron.engine.sampling import MAX_ADDITIVE_PENALTY, MAX_TEMPERATURE
from nemotron.server.errors import bad_request
from nemotron.server.params import EXPECTS

TOKEN_LIMIT = 1 << 20  # token counts and top_k: more than any model's context or vocabulary
MAX_REPETITION_PENALTY = 100.0  # beyond this every repeated token is ruled out anyway
MAX_SENTENCES = 128  # NeMo's limit; the server's max_choices may lower it
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_STOP_STRINGS = 16  # OpenAI allows 4; vLLM any
MAX_END_STRINGS = 64
MAX_STOP_CHARS = 1000  # an end string is searched for at every step
SEED_RANGE = (-(2**63), 2**64 - 1)  # OpenAI seeds are signed 64-bit; reduced modulo 2**64


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(ge: int, le: int) -> Any:
    """An integer in [ge, le] (the bounds before the validator, or the JSON schema loses them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral)]


EndString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]  # NeMo: empty ones are ignored
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
NOT_SUPPORTED = "not supported: must be empty"


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


# ---- NeMo PUT /generate ---------------------------------------------------------------------------
class GenerateBody(Body):
    """NeMo's text-generation request (megatron_gpt_eval.py server=True), same fields and defaults."""

    sentences: list[str] = Field(description="The prompts, answered in order.",
                                 json_schema_extra={"minItems": 1, "maxItems": MAX_SENTENCES})
    tokens_to_generate: integer(1, TOKEN_LIMIT) = 64
    temperature: float = Field(1.0, gt=0.0, le=MAX_TEMPERATURE)
    add_BOS: bool = False
    top_k: integer(0, TOKEN_LIMIT) = Field(0, description="0: off")
    top_p: float = Field(0.9, ge=0.0, le=1.0, description="0: off")
    greedy: bool = Field(False, description="argmax; every sampling knob is ignored")
    all_probs: bool = Field(False, description="the full distribution at every position (needs compute_logprob)")
    repetition_penalty: float = Field(1.0, ge=1.0, le=MAX_REPETITION_PENALTY)
    min_tokens_to_generate: integer(0, TOKEN_LIMIT) = 0
    end_strings: list[EndString] = Field(["<|endoftext|>"], max_length=MAX_END_STRINGS)
    compute_logprob: bool = False
    random_seed: integer(0, 2**64 - 1) | None = None

    @model_validator(mode="after")
    def _consistent(self) -> GenerateBody:
        if not self.sentences:
            raise bad_request("sentences is empty; give at least one prompt", "sentences")
        if self.all_probs and not self.compute_logprob:
            raise bad_request("all_probs needs compute_logprob: true (the full distributions come with the "
                              "log-probabilities)", "all_probs")
        return self


# ---- OpenAI /v1/completions and /v1/chat/completions ---------------------------------------------
class StreamOptions(Body):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = Field(None, description="vLLM's; not supported: must be false")

    @model_validator(mode="after")
    def _supported(self) -> StreamOptions:
        if self.continuous_usage_stats:
            raise bad_request("stream_options.continuous_usage_stats is not supported by this server (usage comes "
                              "in the last chunk with include_usage)", "stream_options")
        return self


class ResponseFormat(Body):
    type: Literal["text"] = "text"


class SamplingBody(Body):
    """Fields both OpenAI endpoints share; null means the default, as OpenAI's server reads it."""

    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=MAX_TEMPERATURE, description="0: greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: integer(1, MAX_SENTENCES) | None = None
    seed: integer(SEED_RANGE[0], SEED_RANGE[1]) | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-MAX_ADDITIVE_PENALTY, le=MAX_ADDITIVE_PENALTY,
                                            description="minus this times each generated token's count")
    presence_penalty: float | None = Field(None, ge=-MAX_ADDITIVE_PENALTY, le=MAX_ADDITIVE_PENALTY,
                                           description="minus this for each token generated at least once")
    logit_bias: dict[str, float] | None = Field(None, description=NOT_SUPPORTED,
                                                json_schema_extra={"maxProperties": 0})
    tools: list[dict[str, Any]] | None = Field(None, description=NOT_SUPPORTED, json_schema_extra={"maxItems": 0})
    functions: list[dict[str, Any]] | None = Field(None, description=NOT_SUPPORTED, json_schema_extra={"maxItems": 0})
    response_format: ResponseFormat | None = None
    user: str | None = None
    # OpenAI fields accepted where they ask for nothing more than this server does
    metadata: dict[str, str] | None = Field(None, description="kept by OpenAI for its dashboards; ignored here")
    store: bool | None = Field(None, description="not supported: must be false")
    service_tier: str | None = None
    tool_choice: Literal["none", "auto"] | None = Field(None, description="no tools: none and auto are the same")
    function_call: Literal["none", "auto"] | None = Field(None, description="as tool_choice")
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    # vLLM's extensions
    top_k: integer(-1, TOKEN_LIMIT) | None = Field(None, description="0 or -1: off")
    repetition_penalty: float | None = Field(None, ge=1.0, le=MAX_REPETITION_PENALTY)
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="0: off")
    use_beam_search: bool | None = Field(None, description="not supported: must be false")
    min_tokens: integer(0, TOKEN_LIMIT) | None = None
    ignore_eos: bool | None = None
    stop_token_ids: Annotated[list[integer(0, TOKEN_LIMIT)], Field(max_length=MAX_END_STRINGS)] | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = Field(None, description="vLLM's; special tokens are always shown: must be false")

    @model_validator(mode="after")
    def _supported(self) -> SamplingBody:
        for name in ("logit_bias", "tools", "functions", "use_beam_search", "store", "skip_special_tokens"):
            if getattr(self, name):
                raise bad_request(f"{name} is not supported by this server", name)
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true", "stream_options")
        return self

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


TokenIds = Annotated[list[integer(0, TOKEN_LIMIT)], Field(min_length=1)]


class CompletionBody(SamplingBody):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(
        min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    max_tokens: integer(0, TOKEN_LIMIT) | None = Field(None, description="default 16; 0 scores the prompt")
    echo: bool | None = None
    logprobs: integer(0, MAX_TOP_LOGPROBS) | None = None
    best_of: integer(1, MAX_SENTENCES) | None = Field(None, description="only equal to n")
    suffix: str | None = Field(None, description=NOT_SUPPORTED, json_schema_extra={"maxLength": 0})

    @model_validator(mode="after")
    def _completion_only(self) -> CompletionBody:
        if self.suffix:
            raise bad_request("suffix is not supported", "suffix")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise bad_request("best_of is not supported (only best_of == n)", "best_of")
        return self


class TextPart(Body):
    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"] = Field(description="developer: OpenAI's newer system")
    content: str | list[TextPart]
    name: str | None = Field(None, description="accepted; the Nemotron chat format has no place for it")
    # What the openai client sends back of an assistant message it received (all empty here)
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, description=NOT_SUPPORTED, json_schema_extra={"maxItems": 0})
    function_call: None = None
    audio: None = None

    @model_validator(mode="after")
    def _no_tool_calls(self) -> ChatMessage:
        if self.tool_calls:
            raise bad_request("tool_calls are not supported by this server", "messages")
        return self

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(SamplingBody):
    messages: list[ChatMessage] = Field(json_schema_extra={"minItems": 1})
    max_tokens: integer(0, TOKEN_LIMIT) | None = Field(None, description="default: the rest of the context")
    max_completion_tokens: integer(0, TOKEN_LIMIT) | None = None
    logprobs: bool | None = None
    top_logprobs: integer(0, MAX_TOP_LOGPROBS) | None = None
    add_generation_prompt: bool | None = Field(None, description="vLLM's; the prompt always ends with the assistant's "
                                                                 "header: must be true")

    @model_validator(mode="after")
    def _chat_only(self) -> ChatBody:
        if self.add_generation_prompt is False:
            raise bad_request("add_generation_prompt false is not supported: the reply is always a new assistant turn",
                              "add_generation_prompt")
        if not self.messages:
            raise bad_request(f"messages must be {EXPECTS['messages']}", "messages")
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        return self

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in self.messages]

