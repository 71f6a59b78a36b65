"""Format reward: the completion follows the answer template and the answer is one number."""

from __future__ import annotations

import re

from rlkit.rewards.common import completion_text, predicted_values

_THINK = re.compile(r"^\s*<think>.*?</think>\s*<answer>[^<]*</answer>\s*$", re.DOTALL)
_NO_THINK = re.compile(r"^\s*(?:<think>.*?</think>\s*)?<answer>[^<]*</answer>\s*$", re.DOTALL)


def format_reward(completions, task=None, require_think: bool = False, scale: float = 1.0, **kwargs) -> list[float]:
    """1 if the text is [<think>...</think>] <answer>NUMBER</answer> with one usable number, else 0.

    ``require_think`` makes the <think> block mandatory (the paper's template); the embedded
    tiny model answers without one.
    """
    pattern = _THINK if require_think else _NO_THINK
    out = []
    for c, value in zip(completions, predicted_values(completions, task)):
        text = completion_text(c)
        ok = text is not None and pattern.match(text) is not None and value is not None
        out.append(scale * float(ok))
    return out
