"""User datasets: an ImageFolder (``root/class/*.jpg``, Office-31 layout) or a list file (``path label``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from augkd.data.images import ImageSet
from augkd.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode_all(
    files: list[Path], size: int, skip_bad: bool, progress: bool = False
) -> tuple[list[np.ndarray], list[int], list[str]]:
    from PIL import UnidentifiedImageError

    arrays, kept, bad = [], [], []
    for i, f in enumerate(files):
        try:
            arrays.append(_decode(f, size))
            kept.append(i)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            if not skip_bad:
                raise InputError(
                    f"cannot read image {str(f)!r} ({exc.__class__.__name__}): fix or remove it, "
                    "or pass --set data.skip_bad_files=true to skip and count bad files"
                ) from exc
            bad.append(str(f))
    if bad:
        logger.warning("skipped %d unreadable image(s), first: %s", len(bad), bad[0])
    return arrays, kept, bad


def load_image_folder(root: str | Path, image_size: int = 32, skip_bad_files: bool = False) -> ImageSet:
    """Decode every image of ``root/<class>/...`` once; classes are the sorted sub-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {str(root)!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"dataset folder {str(root)!r} has no class sub-folders (expected root/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        found = sorted(p for p in (root / cname).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise InputError(f"class folder {str(root / cname)!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [ci] * len(found)
    arrays, kept, bad = _decode_all(files, image_size, skip_bad_files)
    if not arrays:
        raise InputError(f"no readable images in {str(root)!r}")
    lab = torch.tensor([labels[i] for i in kept], dtype=torch.long)
    missing = sorted(set(range(len(classes))) - set(lab.tolist()))
    if missing:
        raise InputError(f"class {classes[missing[0]]!r} has no readable images left in {str(root)!r}")
    paths = [str(files[i].relative_to(root)) for i in kept]
    return ImageSet(torch.from_numpy(np.stack(arrays)), lab, classes, paths, bad)


def load_list_file(
    list_file: str | Path,
    root: str | Path | None = None,
    image_size: int = 32,
    skip_bad_files: bool = False,
    num_classes: int | None = None,
) -> ImageSet:
    """Decode the images of a list file: one ``relative/path label`` per line (VisDA ``image_list.txt``).

    The classes are ``0 .. num_classes-1`` (the model's class count, e.g. the teacher's), or ``0`` to the
    largest label when it is not given. A label outside that range is an error naming its line; so is a
    class that no row has (as an empty class folder is).
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise InputError(f"list file not found: {str(list_file)!r}")
    base = Path(root) if root is not None else list_file.parent
    files: list[Path] = []
    labels: list[int] = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise InputError(f"{str(list_file)!r} line {n}: expected 'relative/path label', got {line.strip()!r}")
        if num_classes is not None and int(parts[1]) >= num_classes:
            raise InputError(
                f"{str(list_file)!r} line {n}: label {parts[1]} is outside the classes 0..{num_classes - 1} "
                f"(the model has {num_classes} classes)"
            )
        files.append(base / parts[0])
        labels.append(int(parts[1]))
    if not files:
        raise InputError(f"list file {str(list_file)!r} lists no images")
    if num_classes is None:
        num_classes = max(labels) + 1
    arrays, kept, bad = _decode_all(files, image_size, skip_bad_files)
    if not arrays:
        raise InputError(f"no readable images listed in {str(list_file)!r}")
    lab = torch.tensor([labels[i] for i in kept], dtype=torch.long)
    classes = [str(i) for i in range(num_classes)]
    missing = sorted(set(range(num_classes)) - set(lab.tolist()))
    if missing:  # a class with no (readable) row is a class without images, as an empty class folder
        what = "no rows" if missing[0] not in labels else "no readable images left"
        raise InputError(
            f"list file {str(list_file)!r} has {what} for class {missing[0]} of 0..{num_classes - 1} "
            f"({len(missing)} class(es) without images): every class needs images"
        )
    paths = [str(files[i]) for i in kept]
    return ImageSet(torch.from_numpy(np.stack(arrays)), lab, classes, paths, bad)
