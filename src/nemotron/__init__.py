"""Nemotron-4: model, inference engine, server, synthetic data, training.

The Python API follows vLLM's: `from nemotron import LLM, SamplingParams`. The names below load on
first use, so `import nemotron` stays cheap (no torch until an engine is wanted).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "LLM": "nemotron.engine.llm",
    "AsyncLLM": "nemotron.engine.async_llm",
    "LLMEngine": "nemotron.engine.llm_engine",
    "EngineConfig": "nemotron.engine.llm_engine",
    "SamplingParams": "nemotron.engine.sampling",
    "RequestOutputKind": "nemotron.engine.sampling",
    "RequestOutput": "nemotron.engine.request_output",
    "CompletionOutput": "nemotron.engine.request_output",
    "Logprob": "nemotron.engine.request_output",
    "NemotronError": "nemotron.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nemotron' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
