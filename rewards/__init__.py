"""Reward plugins for GRPO (see rewards/README.md)."""
