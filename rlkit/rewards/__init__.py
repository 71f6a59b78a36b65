"""Reward plugins for GRPO.

A reward is a plain function in TRL's signature: ``f(completions, **columns) -> list[float | None]``
where the columns are the dataset's (``label`` in ``unit``, ``task``, ``depth``, ``dataset``, ``pixels``,
``intrinsics``, ...; rlkit.builder). The built-in rewards score ``label`` in any task's unit.
An experiment names rewards in four forms (``load_reward``):

- a registry name:            ``neg_l1``
- a plugin in ``rewards/``:   ``close_enough`` (a name not in the registry: ``rewards/close_enough.py:close_enough``,
                              the folder of reward files at the top of a checkout, relative to the working directory)
- an importable function:     ``my_package.my_module:my_reward``
- a file and function:        ``path/to/my_reward.py:my_reward``

TRL logs each reward's mean as ``rewards/<name>/mean``: a registry reward under its registry name
(``rewards/format/mean``), a plugin under its function's name (``rewards/my_reward/mean``).

The built-in rewards live inside the installed package (they parse answers with rlkit.prompts); the user's
own live as plain files in ``rewards/``, loaded by path, never installed (EasyR1 keeps its reward files in a
folder the same way).
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import math
import numbers
from pathlib import Path

from rlkit.errors import ConfigError

from rlkit.rewards.depth import delta1, neg_abs_rel, neg_l1, neg_l2
from rlkit.rewards.format import format_reward

REGISTRY = {
    "delta1": delta1,
    "neg_abs_rel": neg_abs_rel,
    "neg_l2": neg_l2,
    "neg_l1": neg_l1,
    "format": format_reward,
}


# the built-in rewards' parameters: a clip or scale of 0 or less would flip or erase the reward signal
PARAMETER_RULES = {"clip": (lambda v: 0 < v < math.inf, "> 0 and finite"),
                   "scale": (lambda v: 0 < v < math.inf, "> 0 and finite"),
                   "threshold": (lambda v: 1 < v < math.inf, "> 1 (a ratio) and finite")}


class RewardOutputError(ConfigError):
    """A reward function returned something TRL would silently turn into NaN or misalign."""


def checked_reward(fn, ref: str):
    """``fn`` with its output checked on every call: one finite number per completion, else the run stops
    at once naming the reward and the value (TRL turns None and NaN into a silent loss of 0)."""
    @functools.wraps(fn)
    def reward(completions, **columns):
        try:  # its own copy: a reward that edits the completions in place cannot change what the next one sees
            out = fn(copy.deepcopy(completions), **columns)
        except Exception as e:  # noqa: BLE001 - a plugin's own bug: name the plugin, keep its traceback as cause
            raise RewardOutputError(f"reward {ref!r} raised {type(e).__name__}: {e}") from e
        problem = _output_problem(out, len(completions))
        if problem:
            raise RewardOutputError(f"reward {ref!r} returned {problem}; a reward returns one finite number per "
                                    "completion")
        return [float(v) for v in out]

    named = fn.func if isinstance(fn, functools.partial) else fn  # a plugin bound to its reward_kwargs
    reward.__name__ = reward.__qualname__ = getattr(named, "__name__", ref)
    return reward


def _output_problem(out, n: int) -> str | None:
    if not isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} ({_short(out)}), not a list"
    if len(out) != n:
        return f"{len(out)} values for {n} completions"
    for i, v in enumerate(out):
        try:  # an int beyond a float's range overflows here, as it would in TRL's tensor
            finite = math.isfinite(float(v))
        except (OverflowError, TypeError, ValueError):
            finite = False
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not finite:
            return f"{_short(v)} for completion {i} (of {_short(out)})"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class RewardLoadError(ValueError):
    pass


PLUGIN_DIR = Path("rewards")  # the user's reward files: a bare name not in REGISTRY is rewards/NAME.py:NAME


def _from_file(path: str, func: str):
    p = Path(path)
    if not p.is_file():
        raise RewardLoadError(f"reward {path}:{func}: as a file path: file {p} not found")
    spec = importlib.util.spec_from_file_location(f"rlkit_reward_plugin_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's file failed to import (or called sys.exit): say so
        raise RewardLoadError(f"reward {path}:{func}: as a file path: importing {p} failed: {e!r}") from e
    return module


def _named(fn, name: str):
    """``fn`` under ``name``: TRL names a reward function by its ``__name__`` (looking through
    functools.partial), so the registry's ``format`` would log as format_reward."""
    @functools.wraps(fn)
    def reward(completions, **columns):
        return fn(completions, **columns)

    reward.__name__ = reward.__qualname__ = name
    return reward


def load_rewards(refs: list[str], kwargs: dict | None = None) -> list:
    """Every reward of an experiment's ``rewards`` list (``kwargs``: its reward_kwargs), each checked per call."""
    return [checked_reward(load_reward(ref, (kwargs or {}).get(ref)), ref) for ref in refs]


def load_reward(ref: str, kwargs: dict | None = None):
    """Resolve a reward reference (registry name, a plugin name in rewards/, module:function or
    file.py:function); a registry reward comes back under its registry name, with or without kwargs."""
    if not isinstance(ref, str) or not ref:
        raise RewardLoadError(f"reward reference must be a non-empty string, got {ref!r}")
    if ":" not in ref and ref not in REGISTRY:
        plugin = PLUGIN_DIR / f"{ref}.py"
        if not plugin.is_file():
            raise RewardLoadError(f"reward {ref!r}: as a registry name: not one of {sorted(REGISTRY)}; as a plugin: "
                                  f"no file {plugin} (or use module:function or path/to/file.py:function)")
        ref = f"{plugin}:{ref}"
    if ":" not in ref:
        fn = REGISTRY[ref]
    else:
        target, func = ref.rsplit(":", 1)
        if target.endswith(".py") or "/" in target:
            module = _from_file(target, func)
            form = "as a file path"
        else:
            try:
                module = importlib.import_module(target)
            except (Exception, SystemExit) as e:  # not found, or the module failed (or exited) while importing
                raise RewardLoadError(f"reward {ref!r}: as module:function: cannot import {target!r}: {e!r}") from None
            form = "as module:function"
        fn = getattr(module, func, None)
        if fn is None or not callable(fn):
            raise RewardLoadError(f"reward {ref!r}: {form}: {target} has no function {func!r}")
    params = inspect.signature(fn).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        raise RewardLoadError(f"reward {ref!r}: the function must take **kwargs (TRL passes every dataset column: "
                              "prompts, completions, label, task, ...)")
    if not kwargs:
        return fn if ":" in ref else _named(fn, ref)
    named = {n for n, p in inspect.signature(fn).parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"completions"}
    unknown = sorted(set(kwargs) - named)
    if unknown:
        raise RewardLoadError(f"reward {ref!r}: unknown argument(s) {unknown}; it takes {sorted(named)}")
    if fn in REGISTRY.values():
        for key, value in kwargs.items():
            if key in PARAMETER_RULES:
                ok, rule = PARAMETER_RULES[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                    raise RewardLoadError(f"reward {ref!r}: {key} must be a number {rule}, got {value!r}")
    bound = functools.partial(fn, **kwargs)
    if fn in REGISTRY.values():  # built-in rewards: check the values now, not mid-training
        try:
            out = bound(["<answer>1.0</answer>", "no answer"], label=[2.0, 2.0], task=["depth", "depth"])
        except (TypeError, ValueError) as e:
            raise RewardLoadError(f"reward {ref!r}: bad arguments {kwargs}: {e}") from None
        if not all(isinstance(v, float) and math.isfinite(v) for v in out):
            raise RewardLoadError(f"reward {ref!r}: arguments {kwargs} give non-finite rewards {out}")
    return bound if ":" in ref else _named(bound, ref)
