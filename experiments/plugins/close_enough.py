"""An example user reward plugin: use it as ``rewards: [experiments/plugins/close_enough.py:close_enough]``.

A reward is a plain function in TRL's signature: completions plus dataset columns as keyword
arguments (depth, task, dataset, pixel, intrinsics, ...); one float (or None to abstain) per completion.
"""

from rlkit.prompts import parse_depth
from rlkit.rewards.common import completion_text


def close_enough(completions, depth, tolerance=0.1, **kwargs):
    """1 if the answer is within ``tolerance`` (relative) of the label, else 0."""
    out = []
    for c, gt in zip(completions, depth):
        pred = parse_depth(completion_text(c))
        out.append(float(pred is not None and abs(pred - gt) <= tolerance * gt))
    return out
