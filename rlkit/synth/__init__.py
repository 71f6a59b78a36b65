"""Procedural scenes: the embedded default dataset, written in the DepthLMBench format."""

from rlkit.synth.generate import generate_split
from rlkit.synth.scenes import FAMILIES, CameraRange, Rooms

__all__ = ["generate_split", "FAMILIES", "CameraRange", "Rooms"]
