"""The benchmark (`python src/benchmark.py`): settings resolution and a tiny end-to-end run.

No timing is asserted: machines are noisy. The smoke run checks that every section measures
something and that the CSV and Markdown reports have the expected shape.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from classicnets.benchmark import CSV_COLUMNS, SECTIONS, resolve_settings, run_benchmark

TINY = (
    "device=cpu",
    "rounds=1",
    "warmup_steps=1",
    "window_steps=2",
    "min_window_s=0",
    "template.batch_size=8",
    "template.num_batches=2",
    "data.batch_size=8",
    "data.num_samples=48",
    "data.num_workers=0",
    "twins.models=[resnet18]",
    "twins.image_size=32",
    "twins.batch_size=2",
    "epoch.num_samples=24",
    "epoch.batch_size=8",
    "epoch.warmup_epochs=0",
    "towers.image_size=67",
    "towers.batch_size=4",
    "extras.print_config=false",
)


def test_settings_take_the_device_profile_and_let_overrides_win(make_cfg) -> None:
    s = resolve_settings(make_cfg("device=cpu", "template.batch_size=32", config_name="benchmark"))
    assert s.device == "cpu"
    assert list(s.sections) == list(SECTIONS)
    assert s.precision == "32-true" and s.channels_last is False
    assert s.template.model == "resnet20" and s.template.batch_size == 32
    # per-network sizes of the profile survive; a global timing knob reaches every section
    s = resolve_settings(
        make_cfg("device=cpu", "rounds=2", "twins.sizes={resnet18: 160}", config_name="benchmark")
    )
    assert s.twins.sizes.resnet18 == 160 and s.twins.sizes.inception_v3 == 299
    assert all(s[sec].rounds == 2 for sec in ("template", "data", "twins"))
    # the GPU profile is the one the H100 figures use
    cuda = OmegaConf.to_container(make_cfg(config_name="benchmark").per_device.cuda)
    assert cuda["precision"] == "bf16-mixed" and cuda["channels_last"] is True
    assert cuda["template"]["model"] == "resnet18" and cuda["template"]["batch_size"] == 512
    assert cuda["epoch"]["num_samples"] == 50000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sections=[template,speed]", "unknown"),
        ("precision=fp8", "precision"),
        ("template.window_steps=0", "window_steps"),
        ("template.warmup_steps=0", "warmup_steps"),
        ("device=tpu", "device"),
    ],
)
def test_bad_settings_are_refused_with_the_key(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_settings(make_cfg("device=cpu", override, config_name="benchmark"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == CSV_COLUMNS
        return list(reader)


def _positive(row: dict[str, str], key: str) -> bool:
    value = float(row[key])
    return math.isfinite(value) and value > 0


def test_tiny_benchmark_writes_every_section(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, config_name="benchmark", out="bench")
    rows = run_benchmark(cfg)
    out = tmp_path / "bench"
    table = _rows(out / "benchmark.csv")
    assert len(table) == len(rows)
    found = {(r["section"], r["case"], r["variant"]) for r in table}
    assert found == {
        ("template", "training", "lightning"),
        ("template", "training", "plain"),
        ("template", "host overhead", "lightning"),
        ("template", "host overhead", "plain"),
        ("data", "data only", "fast"),
        ("data", "data only", "torch"),
        ("data", "training (plain loop)", "fast"),
        ("data", "training (plain loop)", "torch"),
        ("twins", "resnet18", "ours"),
        ("twins", "resnet18", "reference"),
        ("epoch", "synthetic 24 images", "epoch"),
        ("epoch", "synthetic 24 images", "fit total"),
        ("towers", "alexnet, 2 processes", "towers"),
        ("towers", "alexnet, 2 processes", "ddp"),
    }
    for r in table:
        assert _positive(r, "images_per_s") and _positive(r, "seconds"), r
        if r["variant"] != "fit total":
            assert _positive(r, "ms_per_step"), r
        if r["section"] != "epoch":
            assert _positive(r, "ratio") and int(r["windows"]) == 1, r
        assert r["peak_mem_mib"] == ""  # measured on GPU only
        if r["section"] != "epoch":
            assert int(r["steps"]) == 2, r  # min_window_s=0: exactly window_steps
    assert {r["batch_size"] for r in table if r["section"] == "data"} == {"8"}
    twins = [r for r in table if r["section"] == "twins"]
    assert {r["image_size"] for r in twins} == {"32"} and all(int(r["params"]) > 0 for r in twins)
    md = (out / "benchmark.md").read_text()
    for heading in ("## 1. Template", "## 2. Data paths", "## 3. Twins", "## 4. One epoch",
                    "## 5. AlexNet's towers vs DDP"):
        assert heading in md
    towers, ddp = (next(r for r in table if r["variant"] == v) for v in ("towers", "ddp"))
    # each process holds half of AlexNet's parameters and optimizer state under the towers
    assert 2 * int(towers["params"]) == int(ddp["params"])
    half = float(ddp["optimizer_mib"]) / 2
    assert float(towers["optimizer_mib"]) == pytest.approx(half, rel=1e-4)
    assert "template / plain =" in md and "fast / torch =" in md
    assert "µs of host time per step" in md
    tiny = [r for r in table if r["case"] == "host overhead"]
    assert {r["model"] for r in tiny} == {"tiny mlp"} and {r["image_size"] for r in tiny} == {"8"}
    assert "AMD" in md or "Intel" in md or "cpu" in md.lower()


def test_sections_can_be_switched_off(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, "sections=[twins]", config_name="benchmark", out="only")
    run_benchmark(cfg)
    table = _rows(tmp_path / "only" / "benchmark.csv")
    assert {r["section"] for r in table} == {"twins"}
    md = (tmp_path / "only" / "benchmark.md").read_text()
    assert "## 3. Twins" in md and "## 1. Template" not in md
