"""rlkit: turn vision-language models into metric-depth estimators; compare SFT with GRPO."""

__version__ = "0.1.0"
