"""Helpers shared by reward functions: completion text and predicted values, never raising."""

from __future__ import annotations

import math

from rlkit.prompts import TASKS, parse_answer


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


def predicted_values(completions, task=None) -> list[float | None]:
    """Each completion's value, parsed by its task (``task``: TRL's column, one name per completion, or one
    name for all; None or an unknown name: depth)."""
    tasks = task if isinstance(task, (list, tuple)) else [task] * len(completions)
    return [parse_answer(completion_text(c), t if t in TASKS else "depth") for c, t in zip(completions, tasks)]


def as_label(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None
