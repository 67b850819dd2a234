"""``data=huggingface``: datasets built locally (``Dataset.from_dict`` with images, written with
``save_to_disk`` and to Parquet, an image folder) and read through the ``datasets`` library by
:class:`HuggingFaceDataModule`; never the hub (offline mode is forced for every test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets")

import datasets

from classicnets.data import DatasetError, HuggingFaceDataModule
from classicnets.data.huggingface import StreamSplit
from formats import write_image_folder
from formats_hf import CLASSES, tiny_dataset, write_parquet, write_saved

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the hub: datasets' offline switch, as HF_DATASETS_OFFLINE=1 sets it."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _dm(name: Path | str, tmp_path: Path, **kwargs: object) -> HuggingFaceDataModule:
    kwargs = {"batch_size": 4, "num_workers": 0, "image_size": 16, "root": tmp_path,
              "cache_dir": tmp_path / "hf_cache", **kwargs}
    return HuggingFaceDataModule(str(name), **kwargs)  # type: ignore[arg-type]


def _first_pixel(image: object) -> int:
    return int(torch.as_tensor(__import__("numpy").array(image)).flatten()[0])


def test_save_to_disk_splits_classes_and_labels(tmp_path: Path) -> None:
    path = write_saved(tmp_path / "saved", {"train": 30, "test": 9})
    dm = _dm(path, tmp_path, augment=False)
    dm.setup("fit")
    assert dm.classes == list(CLASSES) and dm.num_classes == 3  # the ClassLabel's names
    # no validation split: val_fraction of train; the test split as saved
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 3, 9)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 2, 0]  # test examples in order, label i % 3
    # statistics computed from the training images once, cached under data.root
    (cache,) = (tmp_path / ".classicnets_stats").iterdir()
    assert json.loads(cache.read_text())["mean"] == pytest.approx(list(dm.mean))


def test_validation_split_is_used_and_grey_images_follow_in_channels(tmp_path: Path) -> None:
    path = write_saved(tmp_path / "saved", {"train": 12, "validation": 6, "test": 6},
                       grey=True)
    dm = _dm(path, tmp_path)
    assert dm.in_channels == 1  # found from the images
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 6, 6)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 16, 16)
    rgb = _dm(path, tmp_path, in_channels=3)
    rgb.setup("fit")
    assert next(iter(rgb.val_dataloader()))[0].shape == (4, 3, 16, 16)


def test_parquet_file_string_labels_and_held_out_splits(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "one.parquet", 40, string_labels=True, image_col="image",
                         label_col="category")
    dm = _dm(path, tmp_path)
    dm.setup("fit")
    assert dm.classes == sorted(CLASSES)  # string labels: the sorted names
    # one split: test_fraction (fixed seed) and val_fraction of the rest
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (29, 3, 8)
    every = dm.train_set.indices + dm.val_set.indices + dm.test_set.indices
    assert sorted(every) == list(range(40))
    # each example keeps its own label: position i has class name CLASSES[i % 3]
    for i in (0, 1, 2, 5):
        image, label = dm.train_set.read(i)
        assert dm.classes[label] == CLASSES[i % 3] and _first_pixel(image) == i


def test_image_folder_through_the_imagefolder_builder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=4,
                       splits=("train", "test"))
    dm = _dm(tmp_path / "pets", tmp_path)
    dm.setup("fit")
    assert dm.classes == ["cat", "dog"]
    assert len(dm.test_set) == 8 and len(dm.train_set) + len(dm.val_set) == 8


def test_columns_can_be_named(tmp_path: Path) -> None:
    ds = tiny_dataset(12).rename_columns({"img": "pixels", "label": "y"})
    ds = ds.cast_column("y", datasets.Value("int64"))  # plain integers: found by no rule
    ds.save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(DatasetError, match=r"no label column.*its columns: pixels \(Image\), "
                                           r"y \(Value\(int64\)\).*data.label_column"):
        _dm(tmp_path / "odd", tmp_path)
    dm = _dm(tmp_path / "odd", tmp_path, label_column="y", val_fraction=0.25)
    dm.setup("fit")
    assert dm.classes == ["0", "1", "2"]  # 0 .. the largest label
    with pytest.raises(DatasetError, match="data.image_column=photo: .* has no such column"):
        _dm(tmp_path / "odd", tmp_path, image_column="photo", label_column="y")


def test_of_several_class_label_columns_the_label_named_one_is_taken() -> None:
    from classicnets.data.huggingface import find_columns

    feats = datasets.Features({"img": datasets.Image(),
                               "coarse_label": datasets.ClassLabel(names=["a", "b"]),
                               "fine_label": datasets.ClassLabel(names=["c", "d", "e"])})
    assert find_columns(feats, None, None, "cifar100-like") == ("img", "fine_label")
    assert find_columns(feats, None, "coarse_label", "cifar100-like") == ("img", "coarse_label")


def test_dataset_without_an_image_column_lists_its_columns(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "label": [0, 1, 0]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))
    ds.save_to_disk(str(tmp_path / "text"))
    with pytest.raises(DatasetError, match=r"no image column.*its columns: text \(Value\("
                                           r"string\)\), label \(ClassLabel\(2 classes\)\)"):
        _dm(tmp_path / "text", tmp_path)


def test_missing_local_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "not-here"
    with pytest.raises(DatasetError, match=f"{missing} does not exist"):
        _dm(missing, tmp_path)


def test_offline_and_not_cached_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        _dm("nobody/no-such-dataset", tmp_path)
    msg = str(err.value)
    assert "offline mode is on" in msg and str(tmp_path / "hf_cache") in msg
    assert "HF_DATASETS_OFFLINE" in msg and "data.cache_dir" in msg


def test_fast_loader_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data.loader=fast.*data.loader=torch"):
        _dm("unused", tmp_path, loader="fast")


# ------------------------------------------------------------------ streaming


class _Trainer:
    def __init__(self, rank: int, world: int) -> None:
        self.world_size, self.global_rank, self.current_epoch = world, rank, 0
        self.strategy = type("S", (), {"distributed_sampler_kwargs": {
            "num_replicas": world, "rank": rank}})()


def _ids(split: StreamSplit) -> list[int]:
    return [_first_pixel(row[split.image]) for row in split.ds]


def test_streaming_splits_between_ranks_and_reshuffles_each_epoch(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "data" / "train.parquet", 40)
    seen: dict[int, list[int]] = {}
    dms = {}
    for rank in (0, 1):
        dm = _dm(path, tmp_path, streaming=True, val_samples=8, batch_size=8,
                 shuffle_buffer=16)
        dm.trainer = _Trainer(rank, 2)  # type: ignore[assignment]
        dm.setup("fit")
        assert isinstance(dm.train_set, StreamSplit) and dm.classes == list(CLASSES)
        seen[rank], dms[rank] = _ids(dm.train_set), dm
        batches = list(dm.train_dataloader())
        assert sum(len(y) for _, y in batches) == len(seen[rank])
        assert batches[0][0].shape[1:] == (3, 16, 16)
        assert sorted(_ids(dm.val_set)) == list(range(rank, 8, 2))  # the first 8, shared out
    # the 32 examples after the first 8, each on exactly one rank
    assert sorted(seen[0] + seen[1]) == list(range(8, 40))
    assert len(seen[0]) == len(seen[1]) == 16
    # a new epoch: a new order, and again each example on exactly one rank
    for dm in dms.values():
        dm.train_set.set_epoch(1)
    again = {rank: _ids(dm.train_set) for rank, dm in dms.items()}
    assert sorted(again[0] + again[1]) == list(range(8, 40))
    assert again[0] + again[1] != seen[0] + seen[1]


def test_streaming_ranks_get_equal_shares_when_the_size_is_known(tmp_path: Path) -> None:
    """A hub dataset's metadata gives its split sizes: 41 examples, 8 for validation, leave
    33, and each of 2 ranks streams 16 (DDP ranks must run the same steps)."""
    path = write_parquet(tmp_path / "data" / "train.parquet", 41)
    counts = {}
    for rank in (0, 1):
        dm = _dm(path, tmp_path, streaming=True, val_samples=8, batch_size=4)
        stream = dm.described.splits["train"]
        stream.info.splits = datasets.SplitDict(
            {"train": datasets.SplitInfo("train", num_examples=41)})
        dm.trainer = _Trainer(rank, 2)  # type: ignore[assignment]
        dm.setup("fit")
        counts[rank] = (len(_ids(dm.train_set)), len(_ids(dm.val_set)))
    assert counts == {0: (16, 4), 1: (16, 4)}


def test_streaming_from_save_to_disk_with_its_validation_split(tmp_path: Path) -> None:
    path = write_saved(tmp_path / "saved", {"train": 10, "validation": 5})
    dm = _dm(path, tmp_path, streaming=True)
    dm.setup("fit")
    assert sorted(_ids(dm.val_set)) == list(range(5)) and len(_ids(dm.train_set)) == 10
    assert dm.test_set is dm.val_set  # no test split: tested on validation, with a warning


def test_streaming_refuses_an_empty_training_stream_and_repeated_augmentation(
        tmp_path: Path) -> None:
    """Streaming 12 examples with no validation split and the default 1,000 held out for
    validation leaves nothing to train on: refused naming data.val_samples, not trained for
    zero steps. A stream cannot repeat examples: repeated augmentation is refused."""
    path = write_parquet(tmp_path / "data" / "train.parquet", 12)
    with pytest.raises(DatasetError, match=r"training stream is empty.*data.val_samples=1000"):
        _dm(path, tmp_path, streaming=True).setup("fit")
    with pytest.raises(DatasetError, match=r"data.repeated_augmentation=2.*data.streaming=false"):
        _dm(path, tmp_path, streaming=True, val_samples=4, repeated_augmentation=2).setup("fit")
    # with a policy and erasing the stream trains, its images augmented per example
    dm = _dm(path, tmp_path, streaming=True, val_samples=4, policy="trivialaugment",
             random_erasing=0.5)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all()


# ------------------------------------------------------------------ end to end


def test_train_cli_on_a_saved_dataset(tmp_path: Path) -> None:
    path = write_saved(tmp_path / "saved", {"train": 40, "test": 12})
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / "train.py"), "data=huggingface",
         f"data.name={path}", "data.image_size=32", "data.batch_size=8", "data.num_workers=1",
         "model=lenet5", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
         "extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["test/acc"] <= 1
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    state = ckpt["HuggingFaceDataModule"]
    assert state["classes"] == list(CLASSES) and state["dataset"] == str(path)


def test_a_config_without_its_dataset_says_which_option_to_set(make_cfg: object) -> None:
    from classicnets.runs.config_check import check_config

    for config, option in (("huggingface", "data.name"), ("torchvision", "data.dataset")):
        with pytest.raises(DatasetError, match=f"{option} is not set.*e.g. {option}="):
            check_config(make_cfg(f"data={config}"))  # type: ignore[operator]
