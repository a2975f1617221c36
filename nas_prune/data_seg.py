"""Semantic-map datasets (label map + photo) for SPADE / GauGAN generators.

Two folder layouts, detected from the folder (:func:`detect_seg_layout`):

- ``cityscapes`` (the official release): ``DIR/gtFine/<split>/<city>/*_gtFine_labelIds.png``
  and ``*_gtFine_instanceIds.png`` with ``DIR/leftImg8bit/<split>/<city>/*_leftImg8bit.png``;
  files pair by their first three name parts (``<city>_<seq>_<frame>``). The test split is
  ``val`` (the ``test`` labels of the release are withheld), as CAT and GAN Compression
  evaluate. Maps have 35 label ids (0 .. 34, GauGAN's ``label_nc``); the instance map adds
  one edge channel, 36 in all.
- ``folder`` (any other data): ``DIR/<split>/labels/NAME.png`` (label index maps: one
  integer label per pixel, 8- or 16-bit PNG or a palette PNG's indices),
  ``DIR/<split>/images/NAME.<ext>`` (the photos) and optionally
  ``DIR/<split>/instances/NAME.png`` (instance index maps); files pair by ``NAME``;
  the test split is ``test/`` (or ``val/``).

**The number of labels** is not written in the data: it is the generator's input channels
(``label_nc`` of its architecture), minus one when instance maps are used (the edge
channel). Cityscapes data uses instances when the generator takes 36 channels (35 labels
+ edges) and not when it takes 35. Folder data uses them when the split has an
``instances/`` folder. A label outside ``0 .. n_labels - 1`` is an error naming the file.

Samples are ``{"A": (1, H, W) int64 label map, "B": (3, H, W) photo in [-1, 1],
"instance": (1, H, W) int64 instance map (only when instances are used), "index": int}``;
:func:`to_semantics` turns a batch into the generator input (one-hot labels, then GauGAN's
instance edges) on the device, as GauGAN does, so workers move small integer maps.

Transforms (:class:`nas_prune.data.TransformConfig`; labels and instances are resized with
nearest neighbours, photos bicubic): ``scale_width`` scales to a width of ``crop_size``
keeping the aspect ratio (height ``int(crop_size * h / w)``, GauGAN's cityscapes setting:
2048x1024 -> 512x256); ``resize``, ``resize_and_crop``, ``crop`` and ``none`` as for image
folders. Training samples are flipped at random (same flip for map and photo) when
``flip``; the randomness of sample ``i`` in epoch ``e`` is seeded by ``(seed, e, i)``.

Departures from GauGAN's dataset code: a label outside ``0 .. n_labels - 1`` is an error
naming the file, where GauGAN maps 255 to an extra "don't care" label (its
``contain_dontcare_label`` option, off in CAT's cityscapes runs, whose label ids stop at 33);
files are paired by name rather than by sorted position after a name check.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas_prune.data import IMG_EXTENSIONS, TransformConfig, check_data_folder, to_tensor
from nas_prune.errors import NasPruneError
from nas_prune.images import open_image

__all__ = [
    "CITYSCAPES_LABELS",
    "SEG_LAYOUTS",
    "SegDataset",
    "detect_seg_layout",
    "instance_edges",
    "open_seg_dataset",
    "to_semantics",
]

CITYSCAPES_LABELS = 35
SEG_LAYOUTS = ("cityscapes", "folder")


def detect_seg_layout(root: Path) -> str | None:
    """``"cityscapes"`` (``gtFine/`` + ``leftImg8bit/``), ``"folder"`` (``train/labels/`` or ``test/labels/``), or None."""
    if (root / "gtFine").is_dir() and (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if any((root / s / "labels").is_dir() for s in ("train", "test", "val")):
        return "folder"
    return None


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    out = []
    suffixes = tuple(x.lower() for x in suffixes)
    for r, dirs, names in os.walk(folder):
        dirs.sort()
        out += [Path(r) / n for n in sorted(names) if not n.startswith(".") and n.lower().endswith(suffixes)]
    return out


def _cityscapes_files(root: Path, split: str) -> tuple[list[Path], list[Path], list[Path]]:
    phase = "train" if split == "train" else "val"
    labels_dir, images_dir = root / "gtFine" / phase, root / "leftImg8bit" / phase
    for d in (labels_dir, images_dir):
        if not d.is_dir():
            raise NasPruneError(f"{root}: missing {d.relative_to(root)}/ (cityscapes layout; the test split is val)")
    labels = _files(labels_dir, ("_gtFine_labelIds.png",))
    if not labels:
        raise NasPruneError(f"{labels_dir}: no *_gtFine_labelIds.png files")
    images = {"_".join(p.name.split("_")[:3]): p for p in _files(images_dir, ("_leftImg8bit.png",))}
    out_l, out_i, out_n = [], [], []
    for lp in labels:
        key = "_".join(lp.name.split("_")[:3])
        if key not in images:
            raise NasPruneError(f"{lp}: no matching {key}_leftImg8bit.png under {images_dir}")
        inst = lp.with_name(lp.name.replace("_gtFine_labelIds.png", "_gtFine_instanceIds.png"))
        out_l.append(lp)
        out_i.append(images[key])
        out_n.append(inst)
    return out_l, out_i, out_n


def _folder_files(root: Path, split: str) -> tuple[list[Path], list[Path], list[Path] | None]:
    base = root / split
    if split == "test" and not (base / "labels").is_dir() and (root / "val" / "labels").is_dir():
        base = root / "val"
    labels_dir, images_dir, inst_dir = base / "labels", base / "images", base / "instances"
    for d in (labels_dir, images_dir):
        if not d.is_dir():
            raise NasPruneError(f"{root}: missing {d.relative_to(root)}/ (label-map folder layout: "
                                f"{split}/labels/ and {split}/images/)")
    labels = _files(labels_dir, (".png",))
    if not labels:
        raise NasPruneError(f"{labels_dir}: no .png label maps")
    images = {}
    for p in _files(images_dir, IMG_EXTENSIONS):
        images.setdefault(str(p.relative_to(images_dir).with_suffix("")), p)
    insts = {str(p.relative_to(inst_dir).with_suffix("")): p for p in _files(inst_dir, (".png",))} if inst_dir.is_dir() else None
    out_l, out_i, out_n = [], [], []
    for lp in labels:
        key = str(lp.relative_to(labels_dir).with_suffix(""))
        if key not in images:
            raise NasPruneError(f"{lp}: no image named {key}.* in {images_dir}")
        out_l.append(lp)
        out_i.append(images[key])
        if insts is not None:
            if key not in insts:
                raise NasPruneError(f"{lp}: no instance map {key}.png in {inst_dir}")
            out_n.append(insts[key])
    return out_l, out_i, (out_n if insts is not None else None)


def _read_index_map(path: Path) -> np.ndarray:
    """An integer map ``(H, W)`` from a PNG: palette indices, gray levels or 16/32-bit values."""
    im = open_image(path)  # upright, as its photo
    if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        raise NasPruneError(f"{path}: a label or instance map must be a single-channel index PNG, got mode {im.mode}")
    return np.asarray(im, dtype=np.int64)


class SegDataset(torch.utils.data.Dataset):
    """Label map + photo pairs of one split (module docstring). Index with an int or ``(epoch, index)``.

    Attributes:
        layout: ``cityscapes`` or ``folder``.
        n_labels: one-hot channels of the label map.
        instances: whether samples carry an instance map (one more generator channel).
        label_paths / image_paths / instance_paths: the files, in pairing order.
    """

    def __init__(self, root: str | os.PathLike, *, split: str, label_nc: int, train: bool,
                 transform: TransformConfig = TransformConfig(), seed: int = 0):
        root = Path(root)
        if split not in ("train", "test"):
            raise NasPruneError(f"split {split!r} is not one of train, test")
        check_data_folder(root, "gtFine/ and leftImg8bit/, or train/ and test/ with labels/ and images/")
        layout = detect_seg_layout(root)
        if layout is None:
            raise NasPruneError(
                f"{root}: no semantic-map dataset found (expected gtFine/ and leftImg8bit/ (cityscapes), "
                "or train/labels/ + train/images/ and test/labels/ + test/images/)")
        self.layout, self.train, self.transform, self.seed = layout, train, transform, int(seed)
        if layout == "cityscapes":
            self.label_paths, self.image_paths, inst = _cityscapes_files(root, split)
            if label_nc not in (CITYSCAPES_LABELS, CITYSCAPES_LABELS + 1):
                raise NasPruneError(
                    f"{root}: cityscapes maps have {CITYSCAPES_LABELS} labels (+1 instance-edge channel), "
                    f"but the generator takes {label_nc} input channels")
            self.instances = label_nc == CITYSCAPES_LABELS + 1
            self.instance_paths = inst if self.instances else None
            self.n_labels = CITYSCAPES_LABELS
        else:
            self.label_paths, self.image_paths, self.instance_paths = _folder_files(root, split)
            self.instances = self.instance_paths is not None
            self.n_labels = label_nc - int(self.instances)
            if self.n_labels < 1:
                raise NasPruneError(f"{root}: the generator takes {label_nc} input channels, too few for labels + instance edges")
        if self.instances:
            for p in self.instance_paths:
                if not p.is_file():
                    raise NasPruneError(f"{p}: instance map not found (the generator takes {label_nc} channels: "
                                        f"{self.n_labels} labels + instance edges)")

    def __len__(self) -> int:
        return len(self.label_paths)

    def _size(self, w: int, h: int) -> tuple[int, int]:
        t = self.transform
        if t.preprocess == "scale_width":
            return t.crop_size, int(t.crop_size * h / w)
        if t.preprocess == "none":
            return w, h
        if not self.train or t.preprocess == "resize":
            return t.crop_size, t.crop_size
        if t.preprocess == "resize_and_crop":
            return t.load_size, t.load_size
        return w, h

    def full_label(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` at its file's resolution, ``(H, W)`` int64 (for mIoU)."""
        return _read_index_map(self.label_paths[index])

    def __getitem__(self, key) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        label = _read_index_map(self.label_paths[index])
        if label.min() < 0 or label.max() >= self.n_labels:
            bad = int(label.max()) if label.max() >= self.n_labels else int(label.min())
            raise NasPruneError(f"{self.label_paths[index]}: label {bad} is outside 0..{self.n_labels - 1} "
                                f"({self.n_labels} labels: the generator's input channels"
                                f"{' minus the instance-edge channel' if self.instances else ''})")
        h, w = label.shape
        photo = open_image(self.image_paths[index], "RGB")
        if photo.size != (w, h):
            raise NasPruneError(f"{self.image_paths[index]}: {photo.size[0]}x{photo.size[1]} image for a "
                                f"{w}x{h} label map ({self.label_paths[index].name})")
        maps = {"A": label}
        if self.instances:
            inst = _read_index_map(self.instance_paths[index])
            if inst.shape != label.shape:
                raise NasPruneError(f"{self.instance_paths[index]}: instance map size differs from its label map")
            maps["instance"] = inst
        rng = np.random.default_rng([self.seed, epoch, index])
        size = self._size(w, h)
        t = self.transform
        crop = None
        if self.train and t.preprocess in ("resize_and_crop", "crop"):
            if size[0] < t.crop_size or size[1] < t.crop_size:
                raise NasPruneError(f"{self.label_paths[index]}: {size[0]}x{size[1]} is smaller than crop_size {t.crop_size}")
            x = int(rng.integers(0, size[0] - t.crop_size + 1))
            y = int(rng.integers(0, size[1] - t.crop_size + 1))
            crop = (x, y, x + t.crop_size, y + t.crop_size)
        flip = bool(self.train and t.flip and rng.random() < 0.5)

        def finish(im: Image.Image, method) -> Image.Image:
            if im.size != size:
                im = im.resize(size, method)
            if crop is not None:
                im = im.crop(crop)
            return im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im

        out = {"B": to_tensor(finish(photo, Image.BICUBIC)), "index": index}
        for name, arr in maps.items():
            im = finish(Image.fromarray(arr.astype(np.int32)), Image.NEAREST)
            out[name] = torch.from_numpy(np.asarray(im, dtype=np.int64).copy())[None]
        return out


def open_seg_dataset(root: str | os.PathLike, *, split: str, label_nc: int, transform: TransformConfig = TransformConfig(),
                     seed: int = 0) -> SegDataset:
    """The ``split`` (``train`` or ``test``) of a semantic-map dataset, for a generator taking ``label_nc`` channels.

    Raises:
        NasPruneError: missing folder, unknown layout, unpaired files, or a label count the
            layout cannot give (module docstring).
    """
    return SegDataset(root, split=split, label_nc=label_nc, train=split == "train", transform=transform, seed=seed)


def instance_edges(inst: torch.Tensor) -> torch.Tensor:
    """GauGAN's instance edges of ``(N, 1, H, W)`` instance ids: 1 where a 4-neighbour has another id."""
    e = torch.zeros_like(inst, dtype=torch.bool)
    dx = inst[..., :, 1:] != inst[..., :, :-1]
    dy = inst[..., 1:, :] != inst[..., :-1, :]
    e[..., :, 1:] |= dx
    e[..., :, :-1] |= dx
    e[..., 1:, :] |= dy
    e[..., :-1, :] |= dy
    return e.float()


def to_semantics(batch: dict, *, n_labels: int, device=None) -> torch.Tensor:
    """Generator input ``(N, n_labels [+ 1], H, W)``: one-hot ``batch["A"]`` then the edges of ``batch["instance"]``.

    Computed on ``device`` (the labels are moved there first), as GauGAN's ``preprocess_input``.
    """
    label = batch["A"].to(device, non_blocking=True) if device is not None else batch["A"]
    n, _, h, w = label.shape
    sem = torch.zeros(n, n_labels, h, w, device=label.device).scatter_(1, label.long(), 1.0)
    if "instance" in batch:
        inst = batch["instance"].to(label.device, non_blocking=True)
        sem = torch.cat([sem, instance_edges(inst)], dim=1)
    return sem
