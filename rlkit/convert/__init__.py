"""DepthLMBench from public datasets: ``./run.sh data convert ADAPTER SOURCE --out OUT.jsonl``.

rlkit.convert.core holds the generic converter (depth kind and units, invalid pixels, seeded label sampling, atomic
output); rlkit.convert.adapters the registry and the per-dataset readers of the smaller sets (generic manifest,
KITTI-style PNG, NYUv2, iBims-1, SUN RGB-D, ETH3D); one module each for the official curation's larger sets
(argoverse2, nuscenes, ddad, waymo: LiDAR through rlkit.convert.lidar's z-buffer; scannetpp, matterport3d: depth
images). The README's "Converting public datasets" says what each reads.
"""

from rlkit.convert.adapters import ADAPTERS, open_adapter
from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing, convert, describe

__all__ = ["ADAPTERS", "ConvertError", "DepthSpec", "Entry", "Frame", "Listing", "convert", "describe",
           "open_adapter"]
