"""An example user reward plugin: ``rewards: [close_enough, format]`` finds it here (rewards/NAME.py:NAME).

A reward is a plain function in TRL's signature: completions plus dataset columns as keyword
arguments (label, unit, task, depth, dataset, pixels, intrinsics, ...); one finite float per completion.
"""

from rlkit.rewards.common import predicted_values


def close_enough(completions, label, task=None, tolerance=0.1, **kwargs):
    """1 if the answer is within ``tolerance`` (relative) of the label, in any task's unit, else 0."""
    return [float(pred is not None and abs(pred - gt) <= tolerance * gt)
            for pred, gt in zip(predicted_values(completions, task), label)]
