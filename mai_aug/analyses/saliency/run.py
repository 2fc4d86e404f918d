"""``mai-aug saliency``: Grad-CAM (``monai.visualize.GradCAM``) of each boxed finding of a run's test images, scored
by the pointing game against the dataset's boxes (``BBox_List_2017.csv``).

The boxes are in the original image's pixels; the maps are at the network input. A box is mapped by the size ratio
(the run's load resizes the whole image to ``image_size`` x ``image_size``, aspect not kept), and that mapping is
verified on each original size: an asymmetric probe written as a PNG of that size goes through the run's own load and
deterministic part, and must match the probe resized by the same ratio (no crop, flip or transpose on the way).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from PIL import Image
from scipy import stats

from mai_aug.analyses.evaluate.run import SPLIT_KEYS
from mai_aug.analyses.saliency.resolution import coarse_map, layer_output_size
from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity, output_current
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import RunLayout
from mai_aug.core.locks import holding_run_lock
from mai_aug.data.boxes import find_box_file, read_boxes
from mai_aug.data.loader import build_dataset
from mai_aug.stats.pointing import chance_of_hit, has_peak, map_box, pointing_hit
from mai_aug.transforms.probe import probe_pattern
from mai_aug.transforms.regimes import Regime

logger = logging.getLogger("mai_aug")
#: Spearman correlation the probe must keep through the run's load and deterministic part (monotone intensity
#: changes keep 1; a crop, flip or transpose falls far below).
GEOMETRY_MIN_CORR = 0.9


def target_layer(network: torch.nn.Module, example: torch.Tensor, requested: str | None = None) -> str:
    """``requested`` checked against the network's modules, or the last block with a spatial output before pooling.

    The default is found by running ``example`` once with a forward hook on every module: the last module (in the
    order outputs complete) whose output is (batch, channels, height, width), pooling layers left out. That is
    ``class_layers.relu`` for MONAI's DenseNets (the layer MONAI's Grad-CAM examples use) and ``layer4`` for ResNets.
    """
    names = [name for name, _ in network.named_modules() if name]
    if requested is not None:
        if requested not in names:
            raise MaiAugError(f"`target_layer` {requested!r}: no such module in the network "
                              f"(some are: {', '.join(names[-5:])})")
        return requested
    order: list[str] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: order.append(name)
                                          if isinstance(out, torch.Tensor) and out.ndim == 4 else None)
             for name, module in network.named_modules() if name and "pool" not in type(module).__name__.lower()]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise MaiAugError("the network has no module with a spatial (N, C, H, W) output; pass `target_layer`")
    return order[-1]


def check_geometry(regime: Regime, side: int, size: tuple[int, int], where: str) -> float:
    """Spearman correlation of a (width, height) ``size`` probe through ``regime``'s load and deterministic part
    with the probe resized to ``side`` x ``side``; raises where boxes could not be mapped by the size ratio."""
    width, height = size
    pattern = F.interpolate(probe_pattern(max(size))[None, None], size=(height, width), mode="bilinear")[0, 0]
    pixels = (pattern.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.png"
        Image.fromarray(pixels, mode="L").save(path)
        item = build_dataset([{"image": str(path), "label": [0]}], regime, train=False, cache="none")[0]
    got = torch.as_tensor(item["image"]).float()
    if tuple(got.shape[-2:]) != (side, side):
        raise MaiAugError(f"{where}: regime {regime.name!r} makes a {tuple(got.shape[-2:])} input from a "
                          f"{width}x{height} image, not {side}x{side}: boxes cannot be mapped to it")
    expected = F.interpolate(torch.as_tensor(pixels, dtype=torch.float32)[None, None], size=(side, side),
                             mode="area" if min(size) >= side else "bilinear")[0, 0]
    corr = float(stats.spearmanr(got[0].flatten().numpy(), expected.flatten().numpy())[0])
    if not corr >= GEOMETRY_MIN_CORR:
        raise MaiAugError(f"{where}: regime {regime.name!r} moves pixels in its load or deterministic part (a probe "
                          f"keeps a rank correlation of {corr:.2f} < {GEOMETRY_MIN_CORR}): boxes cannot be mapped "
                          f"by the size ratio")
    return corr


def boxed_items(run: TrainedRun, split: str, boxes: pd.DataFrame, max_images: int | None
                ) -> tuple[list[dict], pd.DataFrame, dict[str, int]]:
    """The split's items with a box of one of the run's findings (the first ``max_images``), their boxes, and
    counts of the boxes left out and why (other images, findings the run does not classify)."""
    items = run.datalist[SPLIT_KEYS[split]]
    by_name = {Path(it["image"]).name: it for it in items}
    in_split = boxes[boxes["image"].isin(by_name)]
    known = in_split[in_split["finding"].isin(run.names)]
    chosen = list(dict.fromkeys(known["image"]))[:max_images]
    used = known[known["image"].isin(chosen)]
    skipped = {"images_not_in_split": int(len(boxes) - len(in_split)),
               "findings_not_classified": int(len(in_split) - len(known)),
               "beyond_max_images": int(len(known) - len(used))}
    return [by_name[name] for name in chosen], used.reset_index(drop=True), skipped


def original_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file as stored: the frame its boxes are given in."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as e:
        raise MaiAugError(f"{path}: cannot read the image's size ({e})") from None


def network_inputs(run: TrainedRun, items: Sequence[dict]) -> torch.Tensor:
    """(n, 1, size, size) network-ready images (the regime's load and deterministic part, as ``evaluate`` runs it)."""
    dataset = run.dataset(items)
    return torch.stack([torch.as_tensor(dataset[i]["image"]).float() for i in range(len(dataset))])


def gradcam(run: TrainedRun, layer: str) -> GradCAM:
    """MONAI's Grad-CAM of the run's network at ``layer``, keeping the raw map.

    MONAI's default post-processing maps each map's (min, max) to (1, 0), flipping it; the raw map (ReLU of the
    gradient-weighted activations, upsampled bilinearly to the input) is kept, so its largest value is the peak.
    One per run: each one hooks the layer for good.
    """
    return GradCAM(nn_module=run.network, target_layers=layer, postprocessing=lambda x: x)


def gradcam_maps(run: TrainedRun, cam: GradCAM, images: torch.Tensor, finding: int, batch_size: int = 16
                 ) -> np.ndarray:
    """(n, size, size) Grad-CAM of ``finding`` for network-ready ``images`` (see :func:`gradcam`)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(run.device)
        if run.config.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        with torch.enable_grad():
            out.append(cam(x, class_idx=finding).detach().float().cpu()[:, 0])
    run.network.zero_grad(set_to_none=True)
    return torch.cat(out).numpy()


def feature_size(run: TrainedRun, layer: str, example: torch.Tensor) -> tuple[int, int]:
    """(height, width) of ``layer``'s output for ``example``: the map's real resolution."""
    return layer_output_size(run.network, layer, example)


def score_finding(run: TrainedRun, cam: GradCAM, items: list[dict], images: torch.Tensor, boxes: pd.DataFrame,
                  finding: str, tolerance: float, sizes: dict[str, tuple[int, int]], keep: int
                  ) -> tuple[list[dict], list[dict]]:
    """``pointing.csv`` rows of one finding (each of its boxed images), and up to ``keep`` panels for the grid."""
    side = run.config.image_size
    mine = boxes[boxes["finding"] == finding]
    index = [i for i, it in enumerate(items) if Path(it["image"]).name in set(mine["image"])]
    maps = gradcam_maps(run, cam, images[index], run.names.index(finding))
    rows, panels = [], []
    for k, i in enumerate(index):
        name = Path(items[i]["image"]).name
        own = mine[mine["image"] == name][["x", "y", "w", "h"]].to_numpy(float)
        mapped = [map_box(b, sizes[name], (side, side)) for b in own]
        hit, col, row, distance = pointing_hit(maps[k], mapped, tolerance)
        rows.append({"image": name, "patient": items[i]["patient"], "finding": finding, "hit": int(hit),
                     "peak_x": col, "peak_y": row, "distance": distance, "boxes": len(own), "flat_map": not has_peak(maps[k]),
                     "chance": chance_of_hit(mapped, side, tolerance),
                     "box_x": mapped[0][0], "box_y": mapped[0][1], "box_w": mapped[0][2], "box_h": mapped[0][3]})
        if len(panels) < keep:
            panels.append({"finding": finding, "image": images[i, 0].numpy(), "map": maps[k], "boxes": mapped,
                           "peak": (col, row), "hit": hit, "name": name})
    return rows, panels


def orientation(pointing: pd.DataFrame, side: int, finding: str = "Cardiomegaly") -> dict | None:
    """Where ``finding``'s map peaks sit left-right: mean position (0 image left, 1 image right), counts per half,
    and its boxes' mean centre for reference; None without such rows."""
    every = pointing[pointing["finding"] == finding]
    if every.empty:
        return None
    rows = every[~every["flat_map"].astype(bool)]  # a constant map has no peak: its first pixel says nothing
    flat = f" ({len(every) - len(rows)} constant maps left out)" if len(rows) < len(every) else ""
    if rows.empty:
        return {"finding": finding, "images": 0, "side": "none",
                "sentence": f"{finding}: all {len(every)} maps are constant (no peak, no side)."}
    x = (rows["peak_x"].to_numpy(float) + 0.5) / side
    centre = ((rows["box_x"] + rows["box_w"] / 2) / side).to_numpy(float)
    right = int((x > 0.5).sum())
    side_word = "right" if right > len(x) / 2 else "left" if right < len(x) / 2 else "both halves equally"
    patient = {"right": "the patient's left", "left": "the patient's right"}.get(side_word, "neither side")
    sentence = (f"{finding}: Grad-CAM peaks sit on the image {side_word} ({patient} in a frontal view) in "
                f"{max(right, len(x) - right)} of {len(x)} maps; mean peak at {x.mean():.2f} of the width from the "
                f"image left (its boxes' centres: {centre.mean():.2f}){flat}.")
    return {"finding": finding, "images": len(x), "right_half": right, "mean_x": float(x.mean()),
            "box_centre_x": float(centre.mean()), "side": side_word, "sentence": sentence}


def saliency_meta(run: TrainedRun, split: str, box_file: Path, tolerance: float, tolerance_rule: str, layer: str,
                  feature: tuple[int, int], skipped: dict, n_boot: int, max_images: int | None, corr: dict) -> dict:
    """``meta.json``: what the files were made from and how (checkpoint, boxes, tolerance, layer, bootstrap)."""
    return {"split": split, **checkpoint_identity(run.checkpoint), "box_file": str(box_file),
            "image_size": run.config.image_size, "tolerance_px": tolerance, "tolerance": tolerance_rule,
            "target_layer": layer, "feature_map": list(feature), "bootstrap": n_boot, "max_images": max_images,
            "boxes_left_out": skipped, "geometry_probe_corr": corr,
            "hit": "the map's peak pixel centre within tolerance_px of one of the finding's boxes (mapped to the "
                   "network input by the size ratio); a constant map (no peak) is a miss"}


@holding_run_lock
def saliency_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str = "auto",
                 max_images: int | None = None, tolerance: float | None = None, layer: str | None = None,
                 boxes: str | Path | None = None, n_boot: int = DEFAULT_BOOTSTRAP, trust: bool | None = None) -> dict:
    """Write ``RUN/saliency/``: ``pointing.csv``, ``hit_rate.csv``, ``grid.png``, ``summary.md``, ``meta.json`` (last),
    and the grid to the run's TensorBoard folder; return the meta (with ``orientation`` where Cardiomegaly is boxed).

    ``tolerance``: pixels at the network input (None: ``default_tolerance``). ``boxes``: the box file (None: the
    run's data folder's ``BBox_List_2017.csv``). The bootstrap is seeded with the run's seed.
    """
    from mai_aug.analyses.saliency.section import write_outputs
    from mai_aug.core.preflight import require_writable_folder
    from mai_aug.stats.pointing import default_tolerance

    if split not in SPLIT_KEYS:
        raise MaiAugError(f"`split` {split!r}: expected test or validation")
    if tolerance is not None and not tolerance >= 0:
        raise MaiAugError(f"`tolerance` {tolerance}: expected a distance in pixels, 0 or more")
    run = TrainedRun(run_dir, checkpoint, device, trust)
    split_items = run.datalist[SPLIT_KEYS[split]]
    box_file = Path(boxes) if boxes is not None else find_box_file([it["image"] for it in split_items],
                                                                    run.config.data)
    if box_file is None:
        raise MaiAugError(f"`run` {run.run_dir}: no BBox_List_2017.csv in its data folder; pass `boxes` FILE "
                          f"(NIH's box list, or a phantom's)")
    items, used, skipped = boxed_items(run, split, read_boxes(box_file), max_images)
    if not items:
        raise MaiAugError(f"{box_file}: no box of the run's findings belongs to a {split} image of {run.run_dir}")
    side = run.config.image_size
    rule = "given (`tolerance`)" if tolerance is not None else f"default: {100 * default_tolerance(1):g}% of the side"
    tolerance = default_tolerance(side) if tolerance is None else float(tolerance)
    out_dir = RunLayout(run.run_dir).saliency_dir
    require_writable_folder(out_dir, "`run`")
    out_dir.mkdir(exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # until the new outputs are complete, none of them vouches
    sizes = {Path(it["image"]).name: original_size(it["image"]) for it in items}
    corr = {f"{w}x{h}": check_geometry(run.regime, side, (w, h), f"`run` {run.run_dir}")
            for w, h in sorted(set(sizes.values()))}
    images = network_inputs(run, items)
    example = images[:1].to(run.device).expand(-1, 3 if run.config.in_channels == 3 else 1, -1, -1)
    layer = target_layer(run.network, example, layer)
    logger.info(f"Grad-CAM at {layer} of {len(items)} {split} images with boxes ({len(used)} boxes)")
    feature = feature_size(run, layer, example)
    if feature == (1, 1):
        logger.warning(f"{layer} is 1x1 at {side} px: every map is constant (no peak, all misses); train at a "
                       f"larger `image_size` or pass an earlier `target_layer`")
    elif coarse_map(layer, feature, side, run.config.network) is not None:
        logger.warning(f"{coarse_map(layer, feature, side, run.config.network)}, or pass an earlier "
                       f"`target_layer`")
    cam, rows, panels = gradcam(run, layer), [], []
    for finding in dict.fromkeys(used["finding"]):
        got, shown = score_finding(run, cam, items, images, used, finding, tolerance, sizes, keep=4)
        rows += got
        panels += shown
    pointing = pd.DataFrame(rows)
    meta = saliency_meta(run, split, box_file, tolerance, rule, layer, feature, skipped,
                         n_boot, max_images, corr)
    meta["orientation"] = orientation(pointing, side)
    write_outputs(run, out_dir, pointing, panels, meta)
    return meta


def saliency_current(run_dir: Path, checkpoint: Path, n_boot: int, tolerance: float | None,
                     max_images: int | None) -> bool:
    """Whether ``RUN/saliency/`` holds a test pointing game from ``checkpoint`` as it is now with these settings."""
    tolerance_wanted = {} if tolerance is None else {"tolerance_px": float(tolerance)}
    meta = output_current(RunLayout(run_dir).saliency_dir / "meta.json", checkpoint, split="test", bootstrap=n_boot,
                          max_images=max_images, **tolerance_wanted)
    return meta is not None and (tolerance is not None or str(meta.get("tolerance", "")).startswith("default"))
