"""Matterport3D, the undistorted release: every color image of every scan with its aligned depth image.

SOURCE is a folder with the scans' undistorted_camera_parameters, undistorted_color_images and
undistorted_depth_images extracted (at any depth below it, as the official curation walks it). Each
SCAN/undistorted_camera_parameters/SCAN.conf lists ``intrinsics_matrix fx 0 cx 0 fy cy 0 0 1`` lines, each followed
by the ``scan DEPTH COLOR <camera-to-world 4x4>`` lines it applies to, and names the color and depth folders
(``color_directory``, ``depth_directory``); ``n_images`` counts the scan lines (a cut file is refused).

Conventions (the dataset's data_organization.md and its GAPS code): depth is "the pixel's distance in the
z-direction from the camera center (_not_ the euclidean distance)", 16-bit PNG, 0.25 mm per unit (/ 4000 = meters),
0 = no reading. The .conf camera looks down -z with +y up and "all images have their origins in the bottom-left";
GAPS (pkgs/RGBD/RGBDImage.cpp, TransformCameraToImage) maps pixel (ix, iy), iy counted from the bottom row, to
(ix + 0.5, iy + 0.5). In the kit's frame (top-left origin, pixel centers at integers) that is cx - 0.5 and
H - cy - 0.5. The official curation (utils/curate_matterport3d.py) writes cx, cy as they are (cy off by H - 2 cy:
5 px for a cy of 509.2 in the 1024-row images), pairs color and depth files by sorting both lists (here the .conf's
scan lines pair them) and keeps euclidean 0.05 to 50 m (here the kit's defaults). As it: every image, depth / 4000
read as z.
"""

from __future__ import annotations

from pathlib import Path

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.readers import read_png16

UNITS_PER_METER = 4000.0  # 0.25 mm per unit


def matterport3d(source: Path):
    """One entry per scan line of every undistorted_camera_parameters/*.conf below SOURCE, named SCAN/COLOR."""

    confs = sorted(source.rglob("undistorted_camera_parameters/*.conf"))
    if not confs:
        raise ConvertError(f"matterport3d: no SCAN/undistorted_camera_parameters/*.conf below {source} (extract "
                           "each scan's undistorted_camera_parameters, _color_images and _depth_images zips)")
    spec = DepthSpec(kind="z", scale=1 / UNITS_PER_METER,
                     native="Matterport3D undistorted_depth_images: 16-bit PNG, 0.25 mm units (/ 4000 = meters) of "
                            "camera z, 0 = no reading")
    entries = []
    for conf in confs:
        scan_dir, scan = conf.parent.parent, conf.stem
        folders, scans = read_conf(conf)
        for depth_name, color_name, camera in scans:
            image = scan_dir / folders.get("color_directory", "undistorted_color_images") / color_name
            depth = scan_dir / folders.get("depth_directory", "undistorted_depth_images") / depth_name
            for what, path in (("color image", image), ("depth image", depth)):
                if not path.is_file():
                    raise ConvertError(f"{conf}: the {what} of scan line {color_name} is missing: {path}")
            name = f"{scan}/{Path(color_name).stem}"
            entries.append(Entry(name, lambda name=name, image=image, depth=depth, camera=camera, scan=scan:
                                 _frame(name, image, depth, camera, scan)))
    return Listing(entries, spec)


def read_conf(path: Path) -> tuple[dict[str, str], list[tuple[str, str, tuple[float, float, float, float]]]]:
    """({color_directory, depth_directory}, [(depth file, color file, the .conf's (fx, fy, cx, cy))])."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    folders, scans, camera, count = {}, [], None, None
    for n, line in enumerate(lines, start=1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        try:
            if f[0] == "n_images":
                count = int(f[1])
            elif f[0] in ("color_directory", "depth_directory"):
                folders[f[0]] = f[1]
            elif f[0] == "intrinsics_matrix":
                k = [float(v) for v in f[1:]]
                if len(k) != 9:
                    raise ValueError
                camera = (k[0], k[4], k[2], k[5])
            elif f[0] == "scan":
                if camera is None:
                    raise ConvertError(f"{path}:{n}: a scan line before any intrinsics_matrix line")
                if len(f) != 19:
                    raise ValueError
                scans.append((f[1], f[2], camera))
        except (ValueError, IndexError):
            raise ConvertError(f"{path}:{n}: not a valid {f[0]} line (intrinsics_matrix: 9 numbers; scan: DEPTH "
                               "COLOR and 16 numbers)") from None
    if count is not None and count != len(scans):
        raise ConvertError(f"{path}: n_images is {count} but it has {len(scans)} scan lines (a cut file?)")
    return folders, scans


def _frame(name: str, image: Path, depth_path: Path, camera: tuple, scan: str) -> Frame:
    """The .conf's bottom-left camera in the kit's frame; the depth image is the color image's size (the converter
    checks it), so its height is the image's."""

    depth = read_png16(depth_path, str(depth_path))
    fx, fy, cx, cy = camera
    return Frame(name, (fx, fy, cx - 0.5, depth.shape[0] - cy - 0.5), depth, str(depth_path), image_path=image,
                 scene=scan)
