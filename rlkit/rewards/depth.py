"""Value rewards (TRL reward signature: completions + dataset columns as keyword arguments).

Named for the paper's depth rewards, they score any task: ``label`` is the true answer in the task's
unit (meters, m/s, seconds) and each completion is parsed by its row's ``task`` (rlkit.prompts.parse_answer),
so no reward assumes meters. Rule for bad answers, the same in every function: a completion with no
usable value (no number, several answers, zero, negative, NaN/inf, not a string) gets the reward's
worst value; error penalties are clipped at ``clip`` so one absurd answer (1e308) cannot dominate a
group, and every reward is multiplied by ``scale``. Rewards are always finite floats.
"""

from __future__ import annotations

from rlkit.rewards.common import as_label, predicted_values


def _score(completions, label, task, error, clip: float, scale: float) -> list[float]:
    out = []
    for pred, gt in zip(predicted_values(completions, task), label):
        g = as_label(gt)
        if pred is None or g is None:
            out.append(-clip * scale)
            continue
        out.append(-min(error(pred, g), clip) * scale)
    return out


def delta1(completions, label, task=None, threshold: float = 1.25, scale: float = 1.0, **kwargs) -> list[float]:
    """1 if max(pred/gt, gt/pred) < threshold else 0."""
    out = []
    for pred, gt in zip(predicted_values(completions, task), label):
        g = as_label(gt)
        out.append(scale * float(pred is not None and g is not None and max(pred / g, g / pred) < threshold))
    return out


def neg_abs_rel(completions, label, task=None, clip: float = 5.0, scale: float = 1.0, **kwargs) -> list[float]:
    """-|pred - gt| / gt, at least -clip."""
    return _score(completions, label, task, lambda p, g: abs(p - g) / g, clip, scale)


def neg_l2(completions, label, task=None, clip: float = 400.0, scale: float = 1.0, **kwargs) -> list[float]:
    """-(pred - gt)^2 in the task's unit squared, at least -clip (default: a 20 m error)."""
    return _score(completions, label, task, lambda p, g: abs(p - g) * abs(p - g), clip, scale)  # inf, not OverflowError


def neg_l1(completions, label, task=None, clip: float = 50.0, scale: float = 1.0, **kwargs) -> list[float]:
    """-|pred - gt| in the task's unit, at least -clip."""
    return _score(completions, label, task, lambda p, g: abs(p - g), clip, scale)
