"""DDAD (TRI's DGP format) for ``data convert ddad``: each camera image of a sample with the sample's LiDAR point
cloud projected into it.

The official DepthLM curation (utils/curate_ddad.py, read in a vendored copy) takes dgp's
SynchronizedSceneDataset(ddad.json, split="val", datum_names=[lidar, CAMERA_01, 05, 06, 07, 08, 09],
generate_depth_from_datum="lidar"): every sample of the validation scenes, the six cameras, and dgp's depth map, which
is camera z. This adapter reads the same files with json and numpy and repeats dgp's geometry
(get_depth_from_point_cloud, in dgp/datasets/annotations.py, and generate_depth_map, dgp/utils/camera.py): the points
of the sample's LIDAR datum (its sensor frame) go to the world with that datum's pose, then into the camera with the
inverse of the camera datum's pose (each pose is its sensor's in the scene's world frame at its own timestamp, which
takes the car's motion between the two out), then through the pinhole K of the sample's calibration (dgp projects
with K alone, no distortion, and so does this adapter). Where it differs: it keeps the nearest point per pixel and
rounds to the nearest pixel (dgp truncates coordinates with astype(int) and lets the last point written win).

The files, as dgp's protos define them (dgp/proto/*.proto; JSON with the proto field names, as dgp's
save_pbobject_as_json writes them and its test scenes show):
- ddad.json (SceneDataset): scene_splits {"0": train, "1": val, "2": test} (enum DatasetSplit), each
  {"filenames": [scene JSON paths relative to ddad.json's folder]};
- SCENE/scene_*.json (Scene): data [Datum: key, id.name (LIDAR, CAMERA_01...), datum.image {filename, width, height,
  pose} or datum.point_cloud {filename, pose}], samples [{datum_keys, calibration_key}];
- SCENE/calibration/KEY.json (SampleCalibration): names [...], intrinsics [{fx, fy, cx, cy, ...}] in the same order;
- a pose: rotation {qw, qx, qy, qz}, translation {x, y, z} (proto3 JSON may omit zeros: missing is 0);
- SCENE/point_cloud/LIDAR/*.npz: 'data', a structured array with fields X, Y, Z (...), or an (N, C) array whose first
  columns are X, Y, Z (dgp's load_datum takes either).
Not verified against the released DDAD files themselves (only against dgp's code, protos and DDAD-like test scenes);
K is assumed to put pixel centers at integers, as OpenCV's projectPoints that dgp uses.
"""

from __future__ import annotations

import logging
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.lidar import pose_matrix, read_json, transform_points, zbuffer_depth

log = logging.getLogger(__name__)

CAMERAS = ("CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09")  # the official DATUMS
LIDAR = "LIDAR"
SPLITS = {"train": "0", "val": "1", "test": "2"}  # dgp DatasetSplit


def ddad(source: Path, *, split: str | None = None):
    """SOURCE: ddad_train_val/ddad.json; the scenes of ``split`` (default val, as the official curation)."""

    split = split or "val"
    if split not in SPLITS:
        raise ConvertError(f"ddad: --split must be one of {sorted(SPLITS)}, got {split!r}")
    if not source.is_file():
        raise ConvertError(f"ddad: SOURCE must be the dataset's ddad.json, got the folder {source}")
    try:
        files = read_json(source, "ddad")["scene_splits"][SPLITS[split]]["filenames"]
    except (KeyError, TypeError):
        raise ConvertError(f"{source}: no scene_splits['{SPLITS[split]}'].filenames (the {split} split)") from None
    entries = [e for f in files for e in _scene_entries(source.parent / f)]
    if not entries:
        raise ConvertError(f"ddad: the {split} scenes of {source} hold no camera image with a {LIDAR} point cloud")
    spec = DepthSpec(kind="z", native="DDAD LIDAR point clouds moved into each camera of the sample through the "
                                      "datums' world poses (as dgp's get_depth_from_point_cloud), nearest point's "
                                      "camera z per pixel")
    return Listing(entries, spec)


def _scene_entries(scene_json: Path) -> list[Entry]:
    scene = read_json(scene_json, "ddad")
    try:
        datums = {d["key"]: (d["id"]["name"].upper(), d["datum"]) for d in scene["data"]}
        samples = [(s["calibration_key"], dict(datums[k] for k in s["datum_keys"])) for s in scene["samples"]]
    except (KeyError, TypeError, AttributeError) as e:
        raise ConvertError(f"{scene_json}: not a DGP scene (key {e} missing or malformed)") from None
    folder, calibrations, entries, no_lidar = scene_json.parent, {}, [], 0
    for key, sample in samples:
        if LIDAR not in sample:
            no_lidar += 1
            continue
        if key not in calibrations:
            calibrations[key] = _calibration(folder / "calibration" / f"{key}.json")
        lidar = _datum(sample[LIDAR], "point_cloud", LIDAR, scene_json)
        for cam in CAMERAS:
            if cam in sample:
                if cam not in calibrations[key]:
                    raise ConvertError(f"{folder / 'calibration' / f'{key}.json'}: no intrinsics for {cam} (names: "
                                       f"{', '.join(calibrations[key])})")
                entries.append(_entry(folder, _datum(sample[cam], "image", cam, scene_json), lidar,
                                      calibrations[key][cam]))
    if no_lidar:
        log.warning("ddad: %s: %d samples have no %s datum; their images are not listed", scene_json, no_lidar, LIDAR)
    return entries


def _calibration(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """{sensor name: (fx, fy, cx, cy)} of a SampleCalibration JSON."""
    calib = read_json(path, "ddad")
    try:
        return {n.upper(): tuple(float(k.get(c, 0.0)) for c in ("fx", "fy", "cx", "cy"))
                for n, k in zip(calib["names"], calib["intrinsics"], strict=True)}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConvertError(f"{path}: not a DGP calibration (names and intrinsics of one length): "
                           f"{type(e).__name__}: {e}") from None


def _datum(value: dict, kind: str, name: str, scene_json: Path) -> dict:
    """filename, pose (sensor to world, 4x4) and, for an image, size (width, height) of a datum."""
    try:
        d = value[kind]
        pose = d.get("pose", {})
        rotation = [pose.get("rotation", {}).get(q, 0.0) for q in ("qw", "qx", "qy", "qz")]
        translation = [pose.get("translation", {}).get(c, 0.0) for c in ("x", "y", "z")]
        out = {"filename": d["filename"], "pose": pose_matrix(rotation, translation,
                                                              f"{scene_json}: {name} {d['filename']}: pose")}
        if kind == "image":
            out["size"] = (int(d["width"]), int(d["height"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConvertError(f"{scene_json}: datum {name}: no usable datum.{kind} ({type(e).__name__}: {e})") from None
    return out


def _entry(folder: Path, image: dict, lidar: dict, intrinsics: tuple) -> Entry:
    image_path, cloud = folder / image["filename"], folder / lidar["filename"]
    for p in (image_path, cloud):
        if not p.is_file():
            raise ConvertError(f"ddad: {p} is missing (its scene JSON lists it)")
    cam_from_lidar = np.linalg.inv(image["pose"]) @ lidar["pose"]
    name = f"{folder.name}/{Path(image['filename']).with_suffix('').as_posix()}"
    return Entry(name, partial(_frame, name, image_path, cloud, cam_from_lidar, intrinsics, image["size"],
                               folder.name))


def read_cloud(path: Path) -> np.ndarray:
    """(N, 3) X, Y, Z of a DGP point cloud .npz (the array 'data')."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = z["data"]
        if data.dtype.names:
            return np.stack([data[c].reshape(-1) for c in ("X", "Y", "Z")], axis=1).astype(np.float64)
        if data.ndim == 2 and data.shape[1] >= 3:
            return data[:, :3].astype(np.float64)
    except FileNotFoundError:
        raise ConvertError(f"ddad: point cloud not found: {path}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a cut file, no 'data', no X
        raise ConvertError(f"{path}: cannot be read as a DGP point cloud (.npz 'data' with X, Y, Z) "
                           f"({type(e).__name__}: {e})") from None
    raise ConvertError(f"{path}: 'data' is a {data.dtype} array of shape {data.shape}, not X, Y, Z fields or (N, 3+)")


def _frame(name, image, cloud, cam_from_lidar, intrinsics, size, scene) -> Frame:
    depth = zbuffer_depth(transform_points(read_cloud(cloud), cam_from_lidar), intrinsics, *size)
    return Frame(name, intrinsics, depth, str(image), image_path=image, scene=scene)
