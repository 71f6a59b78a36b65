"""GRPO: TRL's GRPOTrainer on the builder's rows (GRPO prompt template), rewards from plugins.

vLLM rollouts are TRL's: ``train.use_vllm: true`` with ``vllm_mode: colocate`` or ``server``
passes through unchanged. If vLLM is asked for but not installed we stop before loading a model.
"""

from __future__ import annotations

import functools
import importlib.util
import math

from rlkit.builder import ANSWER_COLUMNS, TrainStream, train_dataset
from rlkit.config import ConfigError, Experiment
from rlkit.models import checkpoint_switches, load_model, load_processor, peft_config
from rlkit.rewards import load_rewards
from rlkit.rewards.common import predicted_values

GRPO_COLUMNS = ("images", "prompt", *ANSWER_COLUMNS)


def pixel_bounds_resize(exp: Experiment) -> bool:
    """Whether model.min_pixels/max_pixels can change a training image (else they need not reach vLLM)."""
    from rlkit.models import family_from_name

    lo, hi, cam = exp.model.min_pixels, exp.model.max_pixels, exp.camera
    if cam.crop_width is None or cam.crop_height is None or not all(s.train_crop for s in exp.data.train):
        return lo is not None or hi is not None  # whole images of any size
    family = family_from_name(exp.model.name)
    if family is not None and family.longest_edge:  # Pixtral: only a longer side above sqrt(max_pixels) shrinks
        return hi is not None and max(cam.crop_width[1], cam.crop_height[1]) > math.isqrt(hi)
    return (hi is not None and hi < cam.crop_width[1] * cam.crop_height[1]) or \
        (lo is not None and lo > cam.crop_width[0] * cam.crop_height[0])


def check_vllm(exp: Experiment) -> None:
    if not exp.train.get("use_vllm"):
        return
    if exp.train.get("vllm_mode", "colocate") == "colocate" and pixel_bounds_resize(exp):
        # TRL builds the colocated engine from the checkpoint alone; its image processor would resize
        # images that training does not (vllm#15364). ./run.sh serve passes the bounds to the server.
        raise ConfigError(f"{exp.source}: model.min_pixels/max_pixels are not passed to a colocated vLLM; use "
                          "train.vllm_mode=server with ./run.sh serve, or save them in the checkpoint's "
                          "preprocessor_config.json and drop them here")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{exp.source}: train.use_vllm is true but vLLM is not installed; "
                          "install it with: pip install -e '.[vllm]'  (GPU machines only)")


def reward_functions(exp: Experiment) -> list:
    funcs = load_rewards(exp.rewards, exp.reward_kwargs)
    funcs[0] = with_answer_diagnostics(funcs[0], exp.completions_per_sample())
    return funcs


def with_answer_diagnostics(fn, group: int):
    """``fn``, also logging what the rewards alone do not show, through TRL's ``log_metric`` (averaged per
    logging step like TRL's own metrics): ``answers/distinct_per_group`` (distinct parsed answers among a
    prompt's ``group`` completions, all unparsable ones counting as one: at 1 the value rewards cannot tell the
    completions apart) and ``answers/parse_fail`` (share of completions without a usable number)."""
    @functools.wraps(fn)
    def reward(completions, **columns):
        log_metric = columns.get("log_metric")
        if callable(log_metric) and completions:
            values = predicted_values(completions, columns.get("task"))
            log_metric("answers/parse_fail", sum(v is None for v in values) / len(values))
            if len(values) % group == 0:  # TRL hands each process whole groups, consecutive
                groups = [values[i:i + group] for i in range(0, len(values), group)]
                log_metric("answers/distinct_per_group", sum(len(set(g)) for g in groups) / len(groups))
        return fn(completions, **columns)

    return reward


# TRL's GRPO metrics (and the kit's answers/*) that say whether a run can learn, for metrics.json and the card
DIAGNOSTICS = ("reward", "reward_std", "frac_reward_zero_std", "answers/distinct_per_group", "answers/parse_fail",
               "completions/mean_length", "completions/clipped_ratio", "clip_ratio/region_mean", "entropy")


def grpo_diagnostics(log_history: list[dict]) -> dict:
    """Per diagnostic (and per reward's mean): its mean over the first and the last tenth of the logged steps."""
    logs = [h for h in log_history if "reward" in h]
    if not logs:
        return {}
    tenth = max(1, len(logs) // 10)
    keys = [k for k in DIAGNOSTICS if k in logs[0]] + [k for k in logs[0] if k.startswith("rewards/") and
                                                      k.endswith("/mean")]
    mean = lambda part, k: round(sum(h[k] for h in part if k in h) / max(1, sum(k in h for h in part)), 4)  # noqa: E731
    return {k: {"first": mean(logs[:tenth], k), "last": mean(logs[-tenth:], k)} for k in keys}


def make_trainer(exp: Experiment, model_path: str, stream: TrainStream, weights: str | None = None):
    """``weights``: a checkpoint to take the model's weights from (a resumed run); else ``model_path``."""
    from trl import GRPOTrainer

    check_vllm(exp)
    funcs = reward_functions(exp)
    processor = load_processor(model_path, exp.model)
    switches = checkpoint_switches(model_path, exp.model)  # the family's official ones, or none
    # first: a DeepSpeed ZeRO-3 config must exist before the model loads
    args = exp.trl_config(**switches.trl_defaults(exp.train))
    model = load_model(weights or model_path, exp.model)
    switches.prepare_model(model, args)
    data = switches.train_rows(train_dataset(stream, GRPO_COLUMNS, num_shards=max(1, args.dataloader_num_workers)),
                               exp.model)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                          processing_class=processor, peft_config=peft_config(exp.model))
    return trainer
