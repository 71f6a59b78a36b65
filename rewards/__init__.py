"""Reward plugins for GRPO.

A reward is a plain function in TRL's signature: ``f(completions, **columns) -> list[float | None]``
where the columns are the dataset's (``depth``, ``task``, ``dataset``, ``pixel``, ``intrinsics``, ...).
An experiment names rewards in three forms (``load_reward``):

- a registry name:            ``neg_l1``
- an importable function:     ``my_package.my_module:my_reward``
- a file and function:        ``experiments/plugins/my_reward.py:my_reward``
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
from pathlib import Path

from rewards.depth import delta1, neg_abs_rel, neg_l1, neg_l2
from rewards.format import format_reward

REGISTRY = {
    "delta1": delta1,
    "neg_abs_rel": neg_abs_rel,
    "neg_l2": neg_l2,
    "neg_l1": neg_l1,
    "format": format_reward,
}


class RewardLoadError(ValueError):
    pass


def _from_file(path: str, func: str):
    p = Path(path)
    if not p.is_file():
        raise RewardLoadError(f"reward {path}:{func}: as a file path: file {p} not found")
    spec = importlib.util.spec_from_file_location(f"rlkit_reward_plugin_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file failed to import: say so, with its error
        raise RewardLoadError(f"reward {path}:{func}: as a file path: importing {p} failed: {e!r}") from e
    return module


def load_reward(ref: str, kwargs: dict | None = None):
    """Resolve a reward reference (registry name, module:function or file.py:function)."""
    if not isinstance(ref, str) or not ref:
        raise RewardLoadError(f"reward reference must be a non-empty string, got {ref!r}")
    if ":" not in ref:
        if ref not in REGISTRY:
            raise RewardLoadError(f"reward {ref!r}: as a registry name: not one of {sorted(REGISTRY)} "
                                  "(or use module:function or path/to/file.py:function)")
        fn = REGISTRY[ref]
    else:
        target, func = ref.rsplit(":", 1)
        if target.endswith(".py") or "/" in target:
            module = _from_file(target, func)
            form = "as a file path"
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise RewardLoadError(f"reward {ref!r}: as module:function: cannot import {target!r}: {e}") from None
            form = "as module:function"
        fn = getattr(module, func, None)
        if fn is None or not callable(fn):
            raise RewardLoadError(f"reward {ref!r}: {form}: {target} has no function {func!r}")
    if not kwargs:
        return fn
    named = {n for n, p in inspect.signature(fn).parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"completions"}
    unknown = sorted(set(kwargs) - named)
    if unknown:
        raise RewardLoadError(f"reward {ref!r}: unknown argument(s) {unknown}; it takes {sorted(named)}")
    bound = functools.partial(fn, **kwargs)
    if fn in REGISTRY.values():  # built-in rewards: check the values now, not mid-training
        try:
            out = bound(["<answer>1.0</answer>", "no answer"], depth=[2.0, 2.0])
        except (TypeError, ValueError) as e:
            raise RewardLoadError(f"reward {ref!r}: bad arguments {kwargs}: {e}") from None
        if not all(isinstance(v, float) and math.isfinite(v) for v in out):
            raise RewardLoadError(f"reward {ref!r}: arguments {kwargs} give non-finite rewards {out}")
    return bound
