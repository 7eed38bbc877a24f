"""All tunable parameters of pimmi, with their defaults and help, in one place.

Settings are resolved once, defaults < config file < command-line options, and then passed
down explicitly. Names follow the original PIMMI's configuration keys where one exists, so
its config files and ``--option value`` overrides keep working.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def _opt(default: Any, help: str, group: str) -> Any:
    return field(default=default, metadata={"help": help, "group": group})


@dataclass(frozen=True)
class Settings:
    # -- generic
    nb_threads: int = _opt(
        os.cpu_count() or 1,
        "Worker processes for extraction and verification, and FAISS threads. Defaults to the number of CPUs.",
        "generic",
    )
    scheduler: str = _opt(
        "",
        "A Dask distributed scheduler (tcp://host:port, or a scheduler file) to run extraction, search and "
        "verification on (pip install 'pimmi[dask]'); the workers must see the image folder and the workspace "
        "at the same paths. Empty: this machine's worker processes.",
        "generic",
    )
    dask_batch_images: int = _opt(
        100, "Images per Dask task (a task costs ~1 ms of scheduling: never one per image).", "generic"
    )
    max_image_pixels: int = _opt(
        150_000_000,
        "Images with more pixels than this are refused (decompression-bomb guard; Pillow's own hard limit is ~179M).",
        "generic",
    )
    min_image_side: int = _opt(32, "Images whose smaller side is below this many pixels are refused.", "generic")

    # -- SIFT extraction
    sift_max_image_dimension: int = _opt(
        512, "Images are scaled so that their larger side is at most this many pixels.", "sift"
    )
    sift_halve: bool = _opt(
        True,
        "Halve the scaled image before SIFT: OpenCV upsamples its input 2x, so this keeps the same finest scale "
        "at a quarter of the cost.",
        "sift",
    )
    sift_nfeatures: int = _opt(
        200,
        "The number of keypoints kept per image, the strongest (see sift_oversample); with a low contrast "
        "threshold every image, smooth ones too, gets about this many.",
        "sift",
    )
    sift_oversample: float = _opt(
        2.0,
        "Detect this many times sift_nfeatures keypoints, then keep sift_nfeatures of them, those on repeated "
        "patterns of the image (text, interface chrome, tiles) last: a caption or a screenshot's interface then "
        "cannot crowd the photo out of the image's keypoints. 1 keeps the strongest, whatever they are on.",
        "sift",
    )
    sift_grid_tiles: bool = _opt(
        True,
        "Grids of 4 to 16 photos in equal rows and columns (collages) are found by their layout and each tile "
        "is extracted on its own, with its own keypoint budget: a tile of a 3x3 grid otherwise gets a ninth "
        "of the image's keypoints, too few to be matched to its source.",
        "sift",
    )
    sift_nOctaveLayers: int = _opt(3, "OpenCV SIFT: layers per octave (3 in Lowe's paper).", "sift")
    sift_contrastThreshold: float = _opt(0.01, "OpenCV SIFT: contrast threshold; larger gives fewer features.", "sift")
    sift_edgeThreshold: float = _opt(10.0, "OpenCV SIFT: edge threshold; larger keeps more edge-like features.", "sift")
    sift_sigma: float = _opt(1.6, "OpenCV SIFT: sigma of the Gaussian at octave 0.", "sift")

    # -- index
    index_type: str = _opt(
        "auto",
        "FAISS factory string, or 'auto' to choose from the number of descriptors "
        "(Flat when small, IVF-SQ8 when medium, IVF-PQ for tens of millions).",
        "index",
    )
    index_nb_images_to_train: int = _opt(
        100_000,
        "At most this many images are sampled to train the index (each gives an equal share of the points).",
        "index",
    )
    index_nprobe: int = _opt(
        0,
        "Inverted lists visited per search (IVF indexes); 0: 2 (the lists grow with the corpus, so that the "
        "cost per image stays flat; 4 finds ~2 % more strongly transformed copies at 10k images, for ~1.5x "
        "the search time).",
        "index",
    )

    # -- query
    query_sift_knn: int = _opt(
        32,
        "Neighbours first retrieved per descriptor; raised adaptively (x4) while the farthest is still a match.",
        "query",
    )
    query_adaptative_knn_max: int = _opt(
        1024, "Upper bound of the adaptive number of neighbours per descriptor.", "query"
    )
    query_dist_ratio_threshold: float = _opt(
        0.7,
        "A neighbour is kept when its distance is below this ratio of the distance of the farthest neighbour "
        "retrieved (the background).",
        "query",
    )
    query_match_max_dist: float = _opt(
        0.4,
        "Neighbours farther than this (L2 between RootSIFT descriptors) are never matches; while the farthest "
        "retrieved neighbour is closer, more neighbours are retrieved.",
        "query",
    )
    query_mirror: bool = _opt(True, "Also match mirrored descriptors, so that flipped copies are found.", "query")
    query_match_nb_threshold: int = _opt(
        5, "Candidate images need at least this many matched keypoints before geometric verification.", "query"
    )
    query_max_candidates: int = _opt(
        100, "At most this many candidates (most votes first) are verified per query image and orientation.", "query"
    )
    query_match_nb_ransac_threshold: int = _opt(
        8, "A match needs at least this many distinct geometric inliers.", "query"
    )
    query_ransac_reproj_threshold: float = _opt(6.0, "RANSAC inlier tolerance, in pixels of the scaled image.", "query")
    query_min_region_side: float = _opt(
        0.08,
        "In at least one of the two images, the matched region must span this fraction of both the width and "
        "the height: a line of shared text alone is not a copy.",
        "query",
    )
    query_min_region_area: float = _opt(
        0.06,
        "In at least one of the two images, the matched region must cover this fraction of the image: what two "
        "images share only in a small corner of both (a caption, a logo, a watermark) does not make them copies.",
        "query",
    )
    query_min_overlap_share: float = _opt(
        0.25,
        "In at least one of the two images, the matched region must hold this share of the keypoints lying where "
        "the two images overlap under the match's transform: a copy shares all of the overlap, two photos "
        "topped with the same caption share one detail of it. 0 turns the rule off.",
        "query",
    )
    query_pattern_alpha: float = _opt(
        0.1,
        "Text and UI chrome are not copies: a match with fewer inliers off repeated patterns (keypoints with "
        "look-alikes in their own image, like letters) than query_match_nb_ransac_threshold is refused when, in "
        "either image, its inliers fall on such patterns more often than chance would put them there (one-sided "
        "binomial test at this level). 0 turns the test off.",
        "query",
    )
    query_overlay_min_images: int = _opt(
        3,
        "Shared overlays (a channel's banner and logo, an app's bars, a watermark) are not copies: a match is "
        "refused when, seen from each of the two images, a third of its inliers also match at least this many "
        "other images, the keypoints matching those images are a small part of the image "
        "(query_overlay_max_share), fewer than query_match_nb_ransac_threshold inliers match none of them, "
        "and the inliers do not spread over the image as its keypoints do. 0 turns the rule off.",
        "query",
    )
    query_overlay_max_share: float = _opt(
        0.5,
        "A shared element is an overlay when it holds less than this share of the image's keypoints (a viral "
        "photo's copies share most of it).",
        "query",
    )
    query_min_pixel_agreement: float = _opt(
        0.5,
        "Two images must look alike where a match lays one over the other: a weak match (its inliers few among "
        "the keypoints of its region, query_pixel_check_density, or in clumps far apart) is refused when fewer "
        "than this share of the textured blocks of the smaller region agree in grey levels with the other image "
        "carried onto it, yet at least an eighth (two unrelated photos under the same banner or app bars agree on "
        "the overlay only; nothing agreeing means a wrong alignment, left to the other rules). 0 turns the check "
        "off.",
        "query",
    )
    query_pixel_check_density: float = _opt(
        0.25,
        "The pixels of a match are checked when, in both images, its inliers are less than this share of the "
        "keypoints inside its matched region, or when in either image they lie in clumps far apart (a banner and "
        "a logo, two tiles two grids share); a strong match is a copy whatever its pixels.",
        "query",
    )
    query_batch_images: int = _opt(256, "Images searched together in one FAISS batch.", "query")

    # -- clusters
    nb_match_ransac: int = _opt(8, "Matches with fewer inliers are left out of the similarity graph.", "clusters")
    algo: str = _opt(
        "parts",
        "Clustering: 'parts' (an image whose matches fall on distinct regions, a montage or a screenshot, joins "
        "the cluster of each region without merging them), 'components' (connected components, as PIMMI), "
        "'louvain' or 'leiden'.",
        "clusters",
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def feature_settings(self) -> dict[str, Any]:
        """The settings that change the extracted features: a workspace is bound to them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["group"] == "sift"}

    def match_settings(self) -> dict[str, Any]:
        """The settings that change which matches a query finds: stored matches found with others are
        computed again."""
        names = [f.name for f in fields(self) if f.metadata["group"] == "query" and f.name != "query_batch_images"]
        return {n: getattr(self, n) for n in ["index_nprobe", *names]}


# Extraction settings added after workspaces were first written, with the value those workspaces used.
LEGACY_FEATURE_SETTINGS: dict[str, Any] = {"sift_oversample": 1.0, "sift_grid_tiles": False}


class SettingsError(ValueError):
    pass


# PIMMI keys that have no meaning here; accepted in config files so that old files still load.
IGNORED_PIMMI_KEYS = {
    "sift_resize_image",
    "query_dist_filter",
    "query_adaptative_sift_knn",
    "query_adaptative_knn_mult",
    "query_adaptative_knn_max_step",
    "query_match_ratio_filter",
    "query_match_ratio_threshold",
    "query_match_nb_filter",
    "query_ransac",
    "query_match_nb_ransac_filter",
    "query_remove_from_results",
}


def setting_fields() -> list[dataclasses.Field]:
    return list(fields(Settings))


def coerce(name: str, value: Any) -> Any:
    """Convert a value read from YAML or the command line to the type of setting ``name``."""
    types = {f.name: f.type for f in fields(Settings)}
    kind = types[name]
    if kind == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"--{option_name(name)}: expected true or false, got {value!r}")
        return bool(value)
    try:
        return {"int": int, "float": float, "str": str}[kind](value)
    except (TypeError, ValueError):
        raise SettingsError(f"--{option_name(name)}: expected {kind}, got {value!r}") from None


def option_name(name: str) -> str:
    return name.replace("_", "-")


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a config file: PIMMI's layout (``key: {value: v, help: h}``) or plain ``key: v``."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: expected a mapping of keys to values")
    known = {f.name for f in fields(Settings)}
    values = {}
    for key, raw in data.items():
        value = raw.get("value") if isinstance(raw, dict) else raw
        if key in IGNORED_PIMMI_KEYS:
            continue
        if key not in known:
            raise SettingsError(f"config file {path}: unknown key {key!r} (see 'pimmi config-params')")
        values[key] = coerce(key, value)
    return values


# Named bundles of settings (``pimmi --preset NAME``); their measured effect is in README "Performance".
PRESETS: dict[str, dict[str, Any]] = {
    # Smaller images and fewer keypoints: ~1.6x faster than the defaults, with copydays F1 and precision as
    # good, but a photo pasted into a montage or cropped hard is found less often (fewer keypoints on it).
    "fast": {"sift_nfeatures": 128, "sift_max_image_dimension": 384},
}


def load_settings(
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
    base: dict[str, Any] | None = None,
) -> Settings:
    """Defaults, then ``base`` (a workspace's extraction settings), then the preset, then the config file,
    then explicit overrides (command-line options)."""
    known = {f.name for f in fields(Settings)}
    values = {k: v for k, v in (base or {}).items() if k in known}
    if preset:
        if preset not in PRESETS:
            raise SettingsError(f"--preset: unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
        values.update(PRESETS[preset])
    if config_path:
        values.update(read_config(config_path))
    for key, value in (overrides or {}).items():
        values[key] = coerce(key, value)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.nb_threads < 1:
        raise SettingsError("--nb-threads must be at least 1")
    if s.algo not in ("parts", "components", "louvain", "leiden"):
        raise SettingsError(f"--algo must be parts, components, louvain or leiden, not {s.algo!r}")
    if s.sift_max_image_dimension < 64:
        raise SettingsError("--sift-max-image-dimension must be at least 64")
    if not 0 < s.query_dist_ratio_threshold <= 1:
        raise SettingsError("--query-dist-ratio-threshold must be in (0, 1]")
    if s.sift_nfeatures < 1:
        raise SettingsError("--sift-nfeatures must be at least 1")
    if s.sift_oversample < 1:
        raise SettingsError("--sift-oversample must be at least 1")
    if s.query_sift_knn < 2:
        raise SettingsError("--query-sift-knn must be at least 2")


def config_text(settings: Settings | None = None) -> str:
    """A commented config file in PIMMI's layout, for ``pimmi create-config``."""
    settings = settings or Settings()
    lines = ["# pimmi configuration. Each key is also a global option: pimmi --KEY-WITH-DASHES VALUE COMMAND ...", ""]
    group = None
    for f in fields(Settings):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += [f"# ---- {group}", ""]
        entry = {f.name: {"value": getattr(settings, f.name), "help": f.metadata["help"]}}
        lines.append(yaml.safe_dump(entry, sort_keys=False, width=110).rstrip())
        lines.append("")
    return "\n".join(lines)
