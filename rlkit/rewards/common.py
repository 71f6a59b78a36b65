"""Helpers shared by reward functions: completion text and predicted depth, never raising."""

from __future__ import annotations

import math

from rlkit.prompts import parse_depth


def completion_text(completion) -> str | None:
    """The text of one completion: a string, or TRL's conversational [{"role", "content"}] list."""
    if isinstance(completion, str):
        return completion
    try:
        if isinstance(completion, list) and completion:
            content = completion[-1].get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    except (AttributeError, TypeError):
        return None
    return None


def predicted_depths(completions) -> list[float | None]:
    return [parse_depth(completion_text(c)) for c in completions]


def as_label(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None
