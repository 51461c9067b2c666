import numpy as np
import pytest
import torch
from PIL import Image

from augkd.config import DataConfig
from augkd.data import augment_batch, load_dataset, load_domain, stratified_split
from augkd.errors import InputError


@pytest.mark.parametrize(("name", "n", "per_class"), [("digits", 1797, None), ("mnist5k", 5000, 500)])
def test_builtin_dataset_shapes_and_labels(name, n, per_class):
    ds = load_dataset(name, image_size=32)
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (n,) and set(ds.labels.tolist()) == set(range(10))
    assert torch.equal(ds.images[:, 0], ds.images[:, 1])  # grey repeated to 3 channels
    assert ds.images.float().mean() > 10  # real digits, not blank
    if per_class:
        assert ds.labels.bincount().tolist() == [per_class] * 10


def test_fashion_mnist_if_installed():
    from augkd.data.builtin import FASHION_DIR

    if not FASHION_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    ds = load_dataset("fashion-mnist", image_size=16, max_per_class=20)
    assert ds.images.shape == (200, 3, 16, 16) and ds.class_names[0] == "t-shirt"


def test_split_is_stratified_deterministic_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)
    a = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    b = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    c = stratified_split(labels, (0.8, 0.1, 0.1), seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["train"], c["train"])
    assert [len(a[k]) for k in ("train", "eval", "test")] == [400, 50, 50]
    for k in a:
        assert labels[a[k]].bincount(minlength=10).unique().numel() == 1  # same count per class
    allidx = torch.cat(list(a.values()))
    assert allidx.unique().numel() == 500


def test_split_office_dslr_sizes_and_shots():
    # DSLR-like: 498 images; per-class rounding gives 80/10/10 within a few images
    labels = torch.randint(0, 31, (498,), generator=torch.Generator().manual_seed(0))
    labels[:31] = torch.arange(31)
    s = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    assert abs(len(s["train"]) - 398) <= 20 and sum(len(v) for v in s.values()) == 498
    k = stratified_split(torch.arange(10).repeat_interleave(50), (0.8, 0.1, 0.1), seed=0, shots_per_class=3)
    assert len(k["train"]) == 30 and len(k["test"]) == 50


def test_split_saved_and_reused(tmp_path):
    cfg = DataConfig(dataset="digits", shots_per_class=5)
    d1 = load_domain(cfg, tmp_path)
    assert (tmp_path / "split.json").is_file()
    d2 = load_domain(cfg.model_copy(update={"split_seed": 99}), tmp_path)  # the saved split wins
    assert torch.equal(d1.test.labels, d2.test.labels) and torch.equal(d1.train.images, d2.train.images)
    assert len(d1.train) == 50


def _write_folder(root, classes=("cat", "dog"), n=3, size=20):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")


def test_image_folder_and_list_file(tmp_path):
    _write_folder(tmp_path / "dom")
    ds = load_dataset(str(tmp_path / "dom"), image_size=16)
    assert ds.images.shape == (6, 3, 16, 16) and ds.class_names == ["cat", "dog"]
    lst = tmp_path / "list.txt"
    lst.write_text("dom/cat/0.jpg 0\ndom/dog/1.jpg 1\n")
    ds2 = load_dataset(str(lst), image_size=16)
    assert ds2.labels.tolist() == [0, 1] and torch.equal(ds2.images[0], ds.images[0])


def test_corrupt_image_and_empty_class_errors(tmp_path):
    _write_folder(tmp_path / "dom")
    (tmp_path / "dom" / "cat" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"cannot read image .*bad\.jpg.*skip_bad_files"):
        load_dataset(str(tmp_path / "dom"), image_size=16)
    ds = load_dataset(str(tmp_path / "dom"), image_size=16, skip_bad_files=True)
    assert len(ds) == 6 and len(ds.skipped) == 1
    (tmp_path / "dom" / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*has no images"):
        load_dataset(str(tmp_path / "dom"), image_size=16, skip_bad_files=True)
    with pytest.raises(InputError, match="neither a built-in"):
        load_dataset(str(tmp_path / "nope"))
    bad_list = tmp_path / "l.txt"
    bad_list.write_text("a.jpg cat\n")
    with pytest.raises(InputError, match="line 1"):
        load_dataset(str(bad_list))


def test_augment_crop_shifts_content():
    x = torch.arange(36.0).view(1, 1, 6, 6).repeat(4, 3, 1, 1) + 1
    y = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert y.shape == x.shape
    for i in range(4):  # every output is a shifted window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(padded[:, r : r + 6, c : c + 6], y[i]) for r in range(5) for c in range(5))
