"""Adapters: each lists one dataset's images as Entries that load Frames in the dataset's native format, and says
how its depth reads (a DepthSpec). rlkit.convert.core does everything else.

adapter  reads                                                        depth as read
generic  a CSV manifest: image, depth[, fx, fy, cx, cy | intrinsics]  as --depth-kind says, x --scale
kitti    the same manifest, or KITTI's depth-selection folder         camera z, uint16 / 256 m, 0 = none
nyuv2    nyu_depth_v2_labeled.mat (MATLAB v7.3 = HDF5)                camera z, meters
ibims1   iBims-1's per-image .mat files (ibims1_core_mat)             camera z, meters; masks
sunrgbd  SUN RGB-D's frame folders (image/, depth/, intrinsics.txt)   camera z, bit-rotated 16-bit mm
eth3d    ETH3D's DSLR images, ground_truth_depth, calibration         camera z, float32 m, inf = none
waymo         Waymo v2 parquet: camera images, LiDAR range images, poses  camera z of the nearest first return
scannetpp     ScanNet++ iPhone frames: rgb/, depth/, rgb_masks/, K json   camera z, uint16 mm at 256x192, 0 = none
matterport3d  Matterport3D undistorted color/depth images, .conf cameras  camera z, uint16 / 4000 m, 0 = none
argoverse2    AV2 sensor logs: ring cameras, nearest LiDAR sweep          camera z of the nearest projected point
nuscenes      nuScenes v1.0 tables: keyframe cameras, LIDAR_TOP .bin      camera z of the nearest projected point
ddad          DDAD's ddad.json (DGP): scenes, calibration, LIDAR .npz     camera z of the nearest projected point

Where each convention comes from is cited at the adapter.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from rlkit.convert.argoverse2 import argoverse2
from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing, check_name
from rlkit.convert.ddad import ddad
from rlkit.convert.matterport3d import matterport3d
from rlkit.convert.nuscenes import nuscenes
from rlkit.convert.readers import bilinear, read_depth_file, read_intrinsics_file, read_png16
from rlkit.convert.scannetpp import scannetpp
from rlkit.convert.waymo import waymo

MANIFEST_COLUMNS = ("image", "depth", "fx", "fy", "cx", "cy", "intrinsics", "scene", "name")


# ----------------------------------------------------------------------------------------------------------------
# manifests


@dataclass
class ManifestRow:
    name: str
    image: Path
    depth: Path
    intrinsics: tuple[float, float, float, float]
    scene: str | None
    source: str


def read_manifest(path: Path, default_intrinsics: tuple | None) -> list[ManifestRow]:
    """A CSV with a header: image, depth (paths relative to the CSV's folder), the camera as fx, fy, cx, cy columns
    or an intrinsics column (a file, see read_intrinsics_file) or --intrinsics for every row; optional scene and
    name (the output image's name, default the image path without its extension)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConvertError(f"manifest not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise ConvertError(f"{path}: not a UTF-8 CSV manifest ({e})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    unknown = [h for h in header if h not in MANIFEST_COLUMNS]
    if "image" not in header or "depth" not in header or unknown:
        raise ConvertError(f"{path}: header {header}: the manifest needs columns 'image' and 'depth'"
                           + (f"; unknown column(s) {unknown}" if unknown else "")
                           + f" (columns: {', '.join(MANIFEST_COLUMNS)})")
    camera_cols = [c for c in ("fx", "fy", "cx", "cy") if c in header]
    if camera_cols and len(camera_cols) != 4:
        raise ConvertError(f"{path}: give all of fx, fy, cx, cy or none, got {camera_cols}")
    root = path.parent
    rows = []
    for lineno, raw in enumerate(reader, start=2):
        rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        source = f"{path}:{lineno}"
        if not rec.get("image") or not rec.get("depth"):
            raise ConvertError(f"{source}: field 'image'/'depth': both are required")
        image, depth = root / rec["image"], root / rec["depth"]
        for key, p in (("image", image), ("depth", depth)):
            if not p.is_file():
                raise ConvertError(f"{source}: field '{key}': file not found: {p}")
        if camera_cols and all(rec.get(c) for c in camera_cols):
            try:
                intr = tuple(float(rec[c]) for c in ("fx", "fy", "cx", "cy"))
            except ValueError:
                raise ConvertError(f"{source}: field 'fx'..'cy': not numbers: "
                                   f"{[rec[c] for c in ('fx', 'fy', 'cx', 'cy')]}") from None
        elif rec.get("intrinsics"):
            intr = read_intrinsics_file(root / rec["intrinsics"], f"{source}: field 'intrinsics'")
        elif default_intrinsics is not None:
            intr = tuple(default_intrinsics)
        else:
            raise ConvertError(f"{source}: no camera: give fx, fy, cx, cy columns, an intrinsics column, or "
                               "--intrinsics FX FY CX CY for every row")
        name = rec.get("name") or str(Path(rec["image"]).with_suffix("")).replace("\\", "/")
        try:
            check_name(name, "the output name")
        except ConvertError as e:
            raise ConvertError(f"{source}: field 'name': {e} (default: the image path without its extension); "
                               "add a 'name' column") from None
        rows.append(ManifestRow(name, image, depth, intr, rec.get("scene") or None, source))
    if not rows:
        raise ConvertError(f"{path}: the manifest lists no images")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# generic and kitti


def generic(source: Path, *, depth_kind: str | None = None, scale: float = 1.0,
            intrinsics: tuple | None = None) -> Listing:
    """Any dataset: a CSV manifest (read_manifest) of RGB files and depth files (read_depth_file); the depth's kind
    must be stated (--depth-kind z|euclidean), meters = value * --scale."""
    if depth_kind is None:
        raise ConvertError("generic: say what the depth maps hold: --depth-kind z (distance along the camera's "
                           "principal axis, as most RGB-D sensors and LiDAR projections) or --depth-kind euclidean "
                           "(distance from the camera center along the pixel's ray)")
    rows = read_manifest(source, intrinsics)
    spec = DepthSpec(kind=depth_kind, scale=scale,
                     native=f"the manifest's depth files (.npy/.npz/16- or 32-bit images) x {scale:g} = meters of "
                            f"{'camera z' if depth_kind == 'z' else 'euclidean distance'}")

    def entry(r: ManifestRow) -> Entry:
        return Entry(r.name, lambda: Frame(r.name, r.intrinsics, read_depth_file(r.depth, r.source),
                                           f"{r.source} ({r.depth})", image_path=r.image, scene=r.scene))

    return Listing([entry(r) for r in rows], spec)


# KITTI depth prediction/completion devkit readme: "Depth maps ... are saved as uint16 PNG images. A 0 value
# indicates an invalid pixel ... the depth for a pixel can be computed in meters by converting the uint16 value to
# float and dividing it by 256.0". The points are Velodyne returns projected with the rectified camera, so the value
# is camera z. DDAD exports written the same way (16-bit, /256) read the same.
KITTI_SCALE = 1.0 / 256.0


def kitti(source: Path, *, intrinsics: tuple | None = None) -> Listing:
    """KITTI-style 16-bit PNG depth: a manifest as for generic, or KITTI's depth-selection folder
    (val_selection_cropped: image/, groundtruth_depth/, intrinsics/ with one K per image)."""
    spec = DepthSpec(kind="z", scale=KITTI_SCALE, native="16-bit PNG, value / 256 = meters of camera z, 0 = no "
                                                         "measurement (KITTI devkit)")
    if source.is_dir():
        rows = _kitti_selection(source)
    else:
        rows = read_manifest(source, intrinsics)

    def entry(r: ManifestRow) -> Entry:
        return Entry(r.name, lambda: Frame(r.name, r.intrinsics, read_png16(r.depth, r.source),
                                           f"{r.source} ({r.depth})", image_path=r.image, scene=r.scene))

    return Listing([entry(r) for r in rows], spec)


def _kitti_selection(root: Path) -> list[ManifestRow]:
    """KITTI's depth-selection layout: image/X_sync_image_N_image_0K.png, groundtruth_depth/
    X_sync_groundtruth_depth_N_image_0K.png, intrinsics/X_sync_image_N_image_0K.txt (K, 9 numbers)."""
    images = root / "image"
    if not images.is_dir() or not (root / "groundtruth_depth").is_dir():
        raise ConvertError(f"{root}: a KITTI depth-selection folder has image/ and groundtruth_depth/ (and "
                           "intrinsics/); for other layouts write a manifest CSV")
    rows = []
    for image in sorted(images.glob("*.png")):
        depth = root / "groundtruth_depth" / image.name.replace("_sync_image_", "_sync_groundtruth_depth_")
        intr = root / "intrinsics" / (image.stem + ".txt")
        source = str(image)
        if not depth.is_file():
            raise ConvertError(f"{source}: its depth map {depth} is missing")
        m = re.match(r"(.*_drive_\d+)_sync", image.name)
        rows.append(ManifestRow(image.stem, image, depth, read_intrinsics_file(intr, source),
                                m.group(1) if m else None, source))
    if not rows:
        raise ConvertError(f"{images}: no PNG images")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# NYUv2


# The RGB camera of NYU Depth v2 (the dataset's toolbox, camera_params.m: fx_rgb, fy_rgb, cx_rgb, cy_rgb) in the
# 640x480 frame of the labeled set, whose images and depths are already registered and undistorted.
NYU_INTRINSICS = (5.1885790117450188e+02, 5.1946961112127485e+02, 3.2558244941119034e+02, 2.5373616633400465e+02)
# The 561x427 window SUN RGB-D ships NYUv2 in (kv1/NYUdata: intrinsics.txt says cx 284.582449 = 325.582449 - 41,
# cy 208.736166 = 253.736166 - 45): it drops the white border the undistortion left in the labeled set (the usual
# eval crop, rows 45..470 x cols 41..600, is one pixel smaller). The official DepthLM curation reads NYUv2 from there.
NYU_CROP = (41, 45, 602, 472)


def nyuv2(source: Path, *, split_file: Path | None = None, split: str | None = None,
          nyu_depths: str = "depths") -> Listing:
    """nyu_depth_v2_labeled.mat: MATLAB v7.3 (HDF5), so h5py sees MATLAB's column-major arrays transposed:
    'images' (N, 3, W, H) uint8 and 'depths' (N, W, H) meters of camera z (NYU's toolbox back-projects them as
    z: x3 = (x - cx) * depth / fx). 'depths' is in-painted (every pixel filled); 'rawDepths' (--nyu-depths) is the
    Kinect's own, 0 where it saw nothing. --split-file splits.mat --split test|train: the standard 654/795 split
    (testNdxs/trainNdxs, 1-based)."""
    h5py = _need("h5py", "nyuv2")
    if nyu_depths not in ("depths", "rawDepths"):
        raise ConvertError(f"--nyu-depths must be depths or rawDepths, got {nyu_depths!r}")
    try:
        f = h5py.File(source, "r")
    except (FileNotFoundError, IsADirectoryError):
        raise ConvertError(f"nyuv2: file not found: {source}") from None
    except OSError as e:
        raise ConvertError(f"nyuv2: {source} is not a MATLAB v7.3 (HDF5) file such as nyu_depth_v2_labeled.mat "
                           f"({e})") from None
    with f:
        for key in ("images", nyu_depths):
            if key not in f:
                raise ConvertError(f"{source}: no dataset '{key}' (it has {sorted(f.keys())}); expected "
                                   "nyu_depth_v2_labeled.mat")
        images, depths = f["images"], f[nyu_depths]
        if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (images.shape[0], *images.shape[2:]):
            raise ConvertError(f"{source}: 'images' has shape {images.shape} and '{nyu_depths}' {depths.shape}; "
                               "expected (N, 3, W, H) and (N, W, H)")
        count = images.shape[0]
        scenes = _nyu_scenes(f, count)
    indices = list(range(count))
    if split_file is not None or split is not None:
        if split_file is None or split not in ("train", "test"):
            raise ConvertError("nyuv2: --split-file splits.mat goes with --split train or --split test")
        indices = _nyu_split(Path(split_file), split, count)
    spec = DepthSpec(kind="z", scale=1.0, max_depth=10.0,
                     native=f"NYUv2 labeled .mat '{nyu_depths}': meters of camera z (NYU toolbox); above 10 m "
                            "(the toolbox's maxDepth) dropped")

    def load(i: int) -> Frame:
        with h5py.File(source, "r") as h:
            rgb = np.ascontiguousarray(h["images"][i].transpose(2, 1, 0))
            depth = np.asarray(h[nyu_depths][i]).T
        return Frame(f"{i + 1:05d}", NYU_INTRINSICS, depth, f"{source}: '{nyu_depths}'[{i}]", rgb=rgb,
                     scene=scenes[i] if scenes else None)

    entries = [Entry(f"{i + 1:05d}", (lambda i=i: load(i))) for i in indices]
    return Listing(entries, spec, crop=NYU_CROP)


def _nyu_scenes(f, count: int) -> list[str] | None:
    """The 'scenes' cell array (one name per image, e.g. kitchen_0028), or None if it is not there as expected."""
    try:
        refs = np.asarray(f["scenes"]).ravel()
        names = ["".join(chr(c) for c in np.asarray(f[r]).ravel()) for r in refs]
    except Exception:  # an optional extra: a file without it converts the same
        return None
    return names if len(names) == count else None


def _nyu_split(path: Path, split: str, count: int) -> list[int]:
    loadmat = _need("scipy.io", "nyuv2 --split-file").loadmat
    key = f"{split}Ndxs"
    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise ConvertError(f"--split-file: file not found: {path}") from None
    except Exception as e:
        raise ConvertError(f"--split-file {path}: not a MATLAB .mat file scipy reads ({e})") from None
    if key not in mat:
        keys = sorted(k for k in mat if not k.startswith("_"))
        raise ConvertError(f"--split-file {path}: no '{key}' (it has {keys})")
    idx = np.asarray(mat[key]).ravel().astype(np.int64)
    if idx.size == 0 or idx.min() < 1 or idx.max() > count:
        raise ConvertError(f"--split-file {path}: '{key}' must hold 1-based indices 1..{count}")
    return [int(i) - 1 for i in idx]


# ----------------------------------------------------------------------------------------------------------------
# iBims-1


def ibims1(source: Path) -> Listing:
    """iBims-1's ibims1_core_mat: one MATLAB v5 .mat per image holding a struct 'data' with rgb (H, W, 3 uint8),
    depth (meters), calib (3x3), mask_invalid and mask_transp (1 = usable; iBims-1's own evaluation multiplies both
    with depth != 0). The depth is camera z: the benchmark's planarity error back-projects it as
    X = (u - cx) * depth / fx, Z = depth. calib is MATLAB's transposed camera matrix [fx 0 0; 0 fy 0; cx cy 1]
    (the evaluation reads fx = calib[0, 0], cx = calib[2, 0]); an untransposed K is accepted too."""
    loadmat = _need("scipy.io", "ibims1").loadmat
    files = sorted(source.glob("*.mat")) if source.is_dir() else [source]
    if not files or not files[0].is_file():
        raise ConvertError(f"ibims1: no .mat files in {source} (expected ibims1_core_mat/*.mat)")
    spec = DepthSpec(kind="z", scale=1.0, native="iBims-1 .mat data.depth: meters of camera z; 0, mask_invalid == 0 "
                                                 "and mask_transp == 0 = no label")

    def load(path: Path) -> Frame:
        try:
            mat = loadmat(path)
        except Exception as e:
            raise ConvertError(f"{path}: not a MATLAB .mat file scipy reads ({e})") from None
        if "data" not in mat or mat["data"].dtype.names is None:
            raise ConvertError(f"{path}: no struct 'data' (it has {sorted(k for k in mat if not k.startswith('_'))})")
        data = mat["data"]
        fields = {}
        for key in ("rgb", "depth", "calib", "mask_invalid", "mask_transp"):
            if key not in data.dtype.names:
                raise ConvertError(f"{path}: field 'data.{key}' is missing (it has {list(data.dtype.names)})")
            fields[key] = np.asarray(data[key][0][0])
        rgb = fields["rgb"]
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ConvertError(f"{path}: field 'data.rgb' is {rgb.dtype} {rgb.shape}, expected (H, W, 3) uint8")
        valid = (fields["mask_invalid"] != 0) & (fields["mask_transp"] != 0)
        return Frame(path.stem, _ibims_camera(fields["calib"], path), fields["depth"], f"{path}: 'data.depth'",
                     rgb=np.ascontiguousarray(rgb), valid=valid, scene=path.stem)

    return Listing([Entry(p.stem, (lambda p=p: load(p))) for p in files], spec)


def _ibims_camera(calib: np.ndarray, path: Path) -> tuple[float, float, float, float]:
    k = np.asarray(calib, dtype=np.float64)
    if k.shape != (3, 3):
        raise ConvertError(f"{path}: field 'data.calib' has shape {k.shape}, expected 3x3")
    if k[0, 2] == 0 and k[1, 2] == 0 and k[2, 2] == 1:  # MATLAB's IntrinsicMatrix: K transposed
        k = k.T
    if k[2, 0] != 0 or k[2, 1] != 0 or k[1, 0] != 0 or k[2, 2] != 1:
        raise ConvertError(f"{path}: field 'data.calib' {k.tolist()} is not a camera matrix")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


# ----------------------------------------------------------------------------------------------------------------
# SUN RGB-D


def sunrgbd_decode(raw: np.ndarray) -> np.ndarray:
    """SUN RGB-D's depth PNGs store millimetres with the 16 bits rotated: SUNRGBDtoolbox/readData/read3dPoints.m
    reads bitor(bitshift(depthVis, -3), bitshift(depthVis, 16 - 3)) / 1000 meters (and clamps above 8 m)."""
    raw = raw.astype(np.uint16)
    return (raw >> 3) | (raw << 13)  # uint16 arithmetic: the low 3 bits wrap to the top, as bitshift on uint16


def sunrgbd(source: Path, *, sunrgbd_depth: str = "depth") -> Listing:
    """SUN RGB-D (SUNRGBD.zip): one folder per frame with image/*.jpg, depth/*.png (--sunrgbd-depth depth_bfx:
    the refined depth) and intrinsics.txt (K, 9 numbers); found anywhere below SOURCE. The depth is camera z:
    the toolbox's read_3d_pts_general back-projects it as x3 = (x - cx) * depth / fx, z3 = depth."""
    if sunrgbd_depth not in ("depth", "depth_bfx"):
        raise ConvertError(f"--sunrgbd-depth must be depth or depth_bfx, got {sunrgbd_depth!r}")
    if not source.is_dir():
        raise ConvertError(f"sunrgbd: {source} is not a folder (expected the SUNRGBD folder of SUNRGBD.zip)")
    frames = sorted(p.parent for p in source.rglob("intrinsics.txt")
                    if (p.parent / "image").is_dir() and (p.parent / sunrgbd_depth).is_dir())
    if not frames:
        raise ConvertError(f"sunrgbd: no frame folder (intrinsics.txt, image/, {sunrgbd_depth}/) below {source}")
    spec = DepthSpec(kind="z", scale=1e-3, max_depth=8.0,
                     native=f"SUN RGB-D {sunrgbd_depth}/*.png: 16-bit, bits rotated right by 3 = millimetres of "
                            "camera z (SUNRGBDtoolbox read3dPoints.m), 0 = no measurement; above 8 m (where the "
                            "toolbox clamps) dropped")
    entries = []
    for folder in frames:
        name = folder.relative_to(source).as_posix()
        image, depth = _only_file(folder / "image", (".jpg", ".jpeg", ".png")), _only_file(folder / sunrgbd_depth,
                                                                                            (".png",))
        intr = read_intrinsics_file(folder / "intrinsics.txt", str(folder))

        def load(image=image, depth=depth, intr=intr, name=name) -> Frame:
            return Frame(name, intr, sunrgbd_decode(read_png16(depth, str(depth))), str(depth), image_path=image,
                         scene=name)

        entries.append(Entry(name, load))
    return Listing(entries, spec)


def _only_file(folder: Path, suffixes: tuple[str, ...]) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    if len(files) != 1:
        raise ConvertError(f"{folder}: expected one {'/'.join(suffixes)} file, found {len(files)}")
    return files[0]


# ----------------------------------------------------------------------------------------------------------------
# ETH3D


# ETH3D's documentation: the ground-truth depth maps "match the original (distorted) versions of the images, not the
# pre-undistorted ones"; they are raw little-endian float32, row-major, at the image's size, inf where there is no
# ground truth, and hold camera z (the official DepthLM curation, utils/curate_eth3d.py, multiplies them by the ray
# length to get euclidean distance). The distorted DSLR images' cameras (dslr_calibration_jpg/cameras.txt) are
# COLMAP THIN_PRISM_FISHEYE. COLMAP puts pixel centers at +0.5 (the image's corner is 0), the kit at integers.
COLMAP_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "THIN_PRISM_FISHEYE": 12}


def colmap_project(model: str, params, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalized rays (x, y, 1) -> COLMAP pixel coordinates (corner origin) through COLMAP's camera model
    (src/colmap/sensor/models.h, ThinPrismFisheyeCameraModel::ImgFromCam and ::Distortion): the equidistant
    fisheye angle theta = atan(r), then radial k1..k4 in theta^2, tangential p1 p2 and thin prism sx1 sy1."""
    p = [float(v) for v in params]
    if model == "SIMPLE_PINHOLE":
        return p[0] * x + p[1], p[0] * y + p[2]
    if model == "PINHOLE":
        return p[0] * x + p[2], p[1] * y + p[3]
    fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1 = p
    r = np.hypot(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(r > np.finfo(np.float64).eps, np.arctan(r) / r, 1.0)
    u, v = x * t, y * t
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3 + k4 * r2 ** 4
    du = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u) + sx1 * r2
    dv = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v) + sy1 * r2
    return fx * (u + du) + cx, fy * (v + dv) + cy


def read_colmap_cameras(path: Path) -> dict[int, tuple[str, int, int, list[float]]]:
    cams = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConvertError(f"eth3d: file not found: {path}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        try:
            cam_id, model, width, height, params = int(f[0]), f[1], int(f[2]), int(f[3]), [float(v) for v in f[4:]]
        except (ValueError, IndexError):
            raise ConvertError(f"{path}:{n}: not a COLMAP camera line (CAMERA_ID MODEL WIDTH HEIGHT PARAMS...)") \
                from None
        if model not in COLMAP_PARAMS:
            raise ConvertError(f"{path}:{n}: camera model {model} is not one of {sorted(COLMAP_PARAMS)}")
        if len(params) != COLMAP_PARAMS[model]:
            raise ConvertError(f"{path}:{n}: {model} takes {COLMAP_PARAMS[model]} parameters, got {len(params)}")
        if width < 1 or height < 1:
            raise ConvertError(f"{path}:{n}: camera {cam_id} is {width}x{height}; width and height must be at least 1")
        focal = params[:1] if model == "SIMPLE_PINHOLE" else params[:2]
        if not np.isfinite(params).all() or not all(v > 0 for v in focal):
            raise ConvertError(f"{path}:{n}: camera {cam_id}: the parameters must be finite and the focal length "
                               f"positive, got {params}")
        cams[cam_id] = (model, width, height, params)
    return cams


def read_colmap_image_names(path: Path) -> list[tuple[str, int]]:
    """(NAME, CAMERA_ID) of each image in a COLMAP images.txt (an image line, then its 2D points line, maybe
    empty)."""
    try:
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    except FileNotFoundError:
        raise ConvertError(f"eth3d: file not found: {path}") from None
    out, i = [], 0
    while i < len(lines):
        f = lines[i].split()
        if not f:
            i += 1
            continue
        if len(f) < 10 or not f[8].isdigit():
            raise ConvertError(f"{path}: {lines[i]!r} is not a COLMAP image line (IMAGE_ID QW QX QY QZ TX TY TZ "
                               "CAMERA_ID NAME)")
        out.append((" ".join(f[9:]), int(f[8])))
        i += 2
    return out


def eth3d(source: Path, *, height: int = 1280) -> Listing:
    """ETH3D high-res multi-view training scenes, each archive extracted into one folder per scene:
    SCENE/images/dslr_images/*.JPG + SCENE/dslr_calibration_jpg/{cameras,images}.txt (SCENE_dslr_jpg.7z) and
    SCENE/ground_truth_depth/dslr_images/*.JPG, the float32 depth maps (SCENE_dslr_depth.7z). Each image and its depth
    map are undistorted onto a pinhole camera with the distorted camera's focal lengths and principal point, scaled
    to ``height`` rows (default 1280 as in the official curation; the 6048x4032 originals become 1920x1280): RGB
    bilinear from the image downscaled first, depth the nearest source pixel (its z; the maps are sparse)."""
    if not source.is_dir():
        raise ConvertError(f"eth3d: {source} is not a folder")
    if height < 1:
        raise ConvertError(f"--height must be at least 1, got {height}")
    calibs = sorted(source.rglob("dslr_calibration_jpg/cameras.txt"))
    if not calibs:
        raise ConvertError(f"eth3d: no SCENE/dslr_calibration_jpg/cameras.txt below {source} (extract "
                           "SCENE_dslr_jpg.7z and SCENE_dslr_depth.7z into one folder)")
    spec = DepthSpec(kind="z", scale=1.0,
                     native="ETH3D ground_truth_depth: raw float32 meters of camera z at the distorted image's size, "
                            "inf = no ground truth; undistorted to a pinhole camera with the image")
    entries = []
    for cameras_txt in calibs:
        scene_dir = cameras_txt.parent.parent
        scene = scene_dir.relative_to(source).as_posix() if scene_dir != source else scene_dir.name
        cams = read_colmap_cameras(cameras_txt)
        for name, cam_id in sorted(read_colmap_image_names(cameras_txt.with_name("images.txt"))):
            if cam_id not in cams:
                raise ConvertError(f"{cameras_txt.with_name('images.txt')}: image {name} has camera {cam_id}, which "
                                   f"{cameras_txt} does not define")
            image, depth = scene_dir / "images" / name, scene_dir / "ground_truth_depth" / name
            for what, p in (("image", image), ("depth map", depth)):
                if not p.is_file():
                    raise ConvertError(f"eth3d: {scene}: the {what} of {name} is missing: {p}")
            key = f"{scene}/{Path(name).stem}"
            entries.append(Entry(key, (lambda key=key, image=image, depth=depth, cam=cams[cam_id], scene=scene:
                                       _eth3d_frame(key, image, depth, cam, height, scene))))
    return Listing(entries, spec)


def _eth3d_frame(name: str, image: Path, depth_path: Path, cam, height: int, scene: str) -> Frame:
    model, width, src_h, params = cam
    out_h = min(height, src_h)
    out_w = max(1, round(width * out_h / src_h))
    sx, sy = out_w / width, out_h / src_h
    try:
        img = Image.open(image)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ConvertError(f"{image}: cannot be read as an image ({e})") from None
    with img:
        if img.size != (width, src_h):
            raise ConvertError(f"{image} is {img.size[0]}x{img.size[1]} but its camera in cameras.txt is "
                               f"{width}x{src_h}")
        img.draft("RGB", (out_w, out_h))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still large enough
        small = np.asarray(img.convert("RGB").resize((out_w, out_h), Image.Resampling.BOX), dtype=np.float32)
    raw = np.fromfile(depth_path, dtype="<f4")
    if raw.size != width * src_h:
        raise ConvertError(f"{depth_path}: {raw.size} float32 values, but the image {image} is {width}x{src_h} "
                           f"({width * src_h}): the depth map must have the image's size")
    depth = raw.reshape(src_h, width)

    fx, fy, cx, cy = (params[0], params[0], params[1], params[2]) if model == "SIMPLE_PINHOLE" else params[:4]
    ofx, ofy, ocx, ocy = fx * sx, fy * sy, cx * sx, cy * sy  # the output pinhole camera, COLMAP (corner) convention
    u = (np.arange(out_w) + 0.5 - ocx) / ofx  # each output pixel center's ray
    v = (np.arange(out_h) + 0.5 - ocy) / ofy
    px, py = colmap_project(model, params, *np.meshgrid(u, v))  # where it lands in the distorted image
    # depth: the source pixel containing that point (COLMAP pixel i covers [i, i + 1))
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < src_h)
    z = np.full((out_h, out_w), np.nan, dtype=np.float32)
    z[inside] = depth[iy[inside], ix[inside]]
    # RGB: bilinear in the downscaled image (its pixel j's center is the source's COLMAP coordinate (j + 0.5) / s)
    rgb = bilinear(small, px * sx - 0.5, py * sy - 0.5)
    return Frame(name, (ofx, ofy, ocx - 0.5, ocy - 0.5), z, f"{depth_path}", rgb=rgb, scene=scene)


# ----------------------------------------------------------------------------------------------------------------


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ConvertError(f"{what} needs {package}: pip install -e '.[convert]'") from None


@dataclass(frozen=True)
class Adapter:
    open: Callable[..., Listing]
    options: tuple[str, ...]  # the keyword options it takes (the CLI refuses the others)
    source: str  # what SOURCE is, for --help


ADAPTERS = {
    "generic": Adapter(generic, ("depth_kind", "scale", "intrinsics"), "a CSV manifest"),
    "kitti": Adapter(kitti, ("intrinsics",), "a CSV manifest or a KITTI depth-selection folder"),
    "nyuv2": Adapter(nyuv2, ("split_file", "split", "nyu_depths"), "nyu_depth_v2_labeled.mat"),
    "ibims1": Adapter(ibims1, (), "the ibims1_core_mat folder (or one .mat)"),
    "sunrgbd": Adapter(sunrgbd, ("sunrgbd_depth",), "the SUNRGBD folder"),
    "eth3d": Adapter(eth3d, ("height",), "a folder of ETH3D scenes"),
    "waymo": Adapter(waymo, (), "a Waymo Open Dataset v2 split folder (camera_image/, lidar/, ... parquet)"),
    "scannetpp": Adapter(scannetpp, (), "ScanNet++'s data/ folder, iPhone frames extracted by the toolkit"),
    "matterport3d": Adapter(matterport3d, (), "a folder of Matterport3D scans' undistorted images and .conf files"),
    "argoverse2": Adapter(argoverse2, (), "an Argoverse 2 sensor split folder of logs (or one log)"),
    "nuscenes": Adapter(nuscenes, (), "a nuScenes dataroot with one v1.0-* table folder (or that folder)"),
    "ddad": Adapter(ddad, ("split",), "DDAD's ddad_train_val/ddad.json (--split train: the training scenes)"),
}


def open_adapter(name: str, source: str | Path, **options) -> Listing:
    """The named adapter's listing of SOURCE; ``options`` it does not take (given as not None) are refused."""
    if name not in ADAPTERS:
        raise ConvertError(f"unknown adapter {name!r}; choose from {sorted(ADAPTERS)}")
    adapter = ADAPTERS[name]
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(k for k in given if k not in adapter.options)
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ConvertError(f"{name}: {flags} {'does' if len(foreign) == 1 else 'do'} not apply "
                           f"({name} takes {', '.join('--' + o.replace('_', '-') for o in adapter.options) or 'none'}"
                           "; its depth units and kind are fixed by the format)")
    source = Path(source)
    if not source.exists():
        raise ConvertError(f"{name}: SOURCE not found: {source}")
    return adapter.open(source, **given)
