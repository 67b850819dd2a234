"""The benchmark (`python src/benchmark.py`): its statistics, settings resolution and a tiny
end-to-end run.

No timing is asserted: machines are noisy. The statistics are tested on synthetic windows whose
answers are known; the smoke run checks that every section measures something and that the CSV
and Markdown reports have the expected shape.
"""

from __future__ import annotations

import csv
import math
import random
import re
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from classicnets.benchmark import CSV_COLUMNS, SECTIONS, resolve_settings, run_benchmark
from classicnets.benchmark.measure import (
    Estimate,
    Window,
    alternate,
    bootstrap_median_interval,
    median_interval,
    paired_differences,
    paired_ratios,
    summarise,
    timed_window,
)
from classicnets.benchmark.tables import paired_fields, verdict

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


# ---------------------------------------------------------------------------- statistics
def _sample(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(1.0, 0.1) for _ in range(n)]


def test_bootstrap_interval_holds_the_median_and_narrows_with_more_rounds() -> None:
    widths = []
    for n in (9, 81, 729):
        values = _sample(n, seed=n)
        low, high = bootstrap_median_interval(values)
        assert low <= statistics.median(values) <= high
        widths.append(high - low)
    # the median's standard error falls as 1/sqrt(n): 9x the rounds, about a third the width
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[2] < widths[0] / 4
    # a higher confidence gives a wider interval of the same sample; the seed fixes the answer
    values = _sample(81, seed=1)
    (l90, h90), (l99, h99) = (bootstrap_median_interval(values, c) for c in (0.90, 0.99))
    assert l99 <= l90 and h90 <= h99 and (h99 - l99) > (h90 - l90)
    assert bootstrap_median_interval(values) == bootstrap_median_interval(values)
    # and it is a 95 % interval: over many samples it holds the true median (1.0) about 95 % of
    # the time (seeded samples, so the count is fixed; the bound leaves room for the method's
    # known small-sample under-coverage)
    hits = sum(
        low < 1.0 < high
        for low, high in (bootstrap_median_interval(_sample(41, seed=s), resamples=400)
                          for s in range(200))
    )
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_interval_edge_cases_and_bad_input() -> None:
    assert bootstrap_median_interval([0.9]) == (0.9, 0.9)  # one round: no spread to resample
    assert bootstrap_median_interval([2.0] * 10) == (2.0, 2.0)
    e = median_interval([1.0, 3.0, 2.0])
    assert e.value == 2.0 and 1.0 <= e.low <= e.value <= e.high <= 3.0
    # a clock that was not measured (NaN) or no data: no estimate, not a made-up one
    assert not median_interval([1.0, math.nan]).known and not median_interval([]).known
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_median_interval([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_median_interval([])
    with pytest.raises(ValueError, match="as many windows"):
        paired_ratios([Window(1.0, 1)], [])


def test_paired_ratios_cancel_drift_that_hits_both_variants() -> None:
    # the machine slows down and speeds up from round to round (shared drift); within a round
    # the variant needs 1.25x the baseline's time per step: its throughput ratio is 0.8
    drift = [1.0, 1.6, 0.9, 2.5, 1.1, 1.3, 3.0]
    base = [Window(wall_s=0.8 * d * 4, steps=4, cpu_s=0.8 * 4) for d in drift]
    variant = [Window(wall_s=1.0 * d * 3, steps=3, cpu_s=1.0 * 3) for d in drift]
    ratios = paired_ratios(variant, base)
    assert ratios == pytest.approx([0.8] * len(drift))
    e = median_interval(ratios)
    assert e.value == pytest.approx(0.8) and e.high - e.low == pytest.approx(0.0, abs=1e-12)
    # each variant's own windows spread widely; the paired comparison does not
    assert summarise(variant, batch=128)["spread_pct"] > 100
    assert paired_ratios(variant, base, "cpu") == pytest.approx([0.8] * len(drift))


def test_cpu_time_differences_ignore_waiting_for_a_core() -> None:
    # a host-bound step: plain 500 µs, template 1,040 µs of CPU time per step; the wall clock
    # adds a random wait for a core to either side (a busy machine)
    rng = random.Random(3)
    plain, template = [], []
    for _ in range(15):
        plain.append(Window(wall_s=1000 * 500e-6 * rng.uniform(1, 3), steps=1000,
                            cpu_s=1000 * 500e-6))
        template.append(Window(wall_s=1000 * 1040e-6 * rng.uniform(1, 3), steps=1000,
                               cpu_s=1000 * 1040e-6))
    cpu = [1e6 * d for d in paired_differences(template, plain, "cpu")]
    wall = [1e6 * d for d in paired_differences(template, plain, "wall")]
    assert cpu == pytest.approx([540.0] * 15)
    assert statistics.pstdev(wall) > 100  # the wall clock's view is blurred by the waits
    cols = paired_fields(template, plain, deltas=True)
    assert cols["cpu_delta_us"] == pytest.approx(540.0)
    assert cols["cpu_delta_us_low"] == pytest.approx(540.0) == cols["cpu_delta_us_high"]
    assert cols["delta_us_low"] <= cols["delta_us"] <= cols["delta_us_high"]
    assert cols["cpu_ratio"] == pytest.approx(500 / 1040)
    assert set(paired_fields(template, plain)) == {
        "ratio", "ratio_low", "ratio_high", "cpu_ratio", "cpu_ratio_low", "cpu_ratio_high"}


def test_summaries_take_medians_per_step_and_keep_unknown_cpu_time_unknown() -> None:
    windows = [Window(2.0, 4, 1.0), Window(4.0, 4, 2.0), Window(3.0, 4, 1.5)]
    s = summarise(windows, batch=10)
    assert s["seconds"] == 3.0 and s["ms_per_step"] == 750.0 and s["cpu_ms_per_step"] == 375.0
    assert s["images_per_s"] == pytest.approx(10 / 0.75) and s["windows"] == 3
    assert s["window_images_per_s"].split(";") == ["20", "10", "13.3333"]
    assert s["spread_pct"] == pytest.approx(100 * (20 - 10) / (10 / 0.75))
    # windows timed in another process (towers) carry no CPU time
    s = summarise([Window(1.0, 2), Window(1.5, 2)], batch=1)
    assert math.isnan(s["cpu_ms_per_step"]) and s["window_cpu_ms_per_step"] == ""
    cols = paired_fields([Window(1.0, 2)], [Window(2.0, 2)])
    assert cols["ratio"] == 2.0 and math.isnan(cols["cpu_ratio"])
    with pytest.raises(ValueError, match="no windows"):
        summarise([], batch=1)


def test_windows_alternate_round_by_round_with_their_warmups() -> None:
    calls: list[str] = []
    hooks: list[str] = []

    def runner(name: str) -> object:
        return lambda: calls.append(name)

    w = timed_window(runner("x"), warmup=2, steps=3)
    assert calls == ["x"] * 5 and w.steps == 3 and w.wall_s >= 0 and w.cpu_s >= 0
    calls.clear()
    windows = alternate(
        {"a": runner("a"), "b": runner("b")}, rounds=3, warmup={"a": 1, "b": 0}, window=2,
        before=lambda k: hooks.append(f"before {k}"), after=lambda k: hooks.append(f"after {k}"),
    )
    assert calls == ["a", "a", "a", "b", "b"] * 3  # a: 1 warm-up + 2 timed; b: 2 timed
    assert hooks == ["before a", "after a", "before b", "after b"] * 3
    assert [len(v) for v in windows.values()] == [3, 3]
    assert all(w.steps == 2 for v in windows.values() for w in v)
    with pytest.raises(ValueError, match="warm-up"):
        alternate({"a": runner("a")}, rounds=1, warmup={}, window=1)


def test_verdicts_need_the_whole_interval_on_one_side() -> None:
    assert verdict(Estimate(0.99, 0.975, 1.0), 0.97) == "met"
    assert verdict(Estimate(0.95, 0.93, 0.96), 0.97) == "**not met**"
    assert verdict(Estimate(0.98, 0.95, 1.01), 0.97).startswith("undecided")
    assert verdict(0.98, 0.97) == "met" and verdict(0.9, 0.97) == "**not met**"



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
    # the sections of this file (decode has its own test, tests/test_decode.py)
    cfg = make_cfg(*TINY, "sections=[template,data,twins,epoch,towers]", config_name="benchmark",
                   out="bench")
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
        ("data", "ingredients (training, fast path)", "crop+flip"),
        ("data", "ingredients (training, fast path)", "randaugment+erasing"),
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
            # every comparison carries its interval (a point here: one round)
            assert float(r["ratio_low"]) <= float(r["ratio"]) <= float(r["ratio_high"]), r
        if r["section"] in ("template", "data", "twins"):  # timed in this process: CPU time too
            assert _positive(r, "cpu_ms_per_step") and _positive(r, "cpu_ratio"), r
            assert len(r["window_cpu_ms_per_step"].split(";")) == int(r["windows"]), r
        if r["section"] == "template":
            assert r["cpu_delta_us"] != "" and r["delta_us_low"] != "", r
            if r["variant"] == "plain":  # the baseline against itself
                assert float(r["cpu_ratio"]) == 1.0 and float(r["cpu_delta_us"]) == 0.0
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
    assert "ingredients: randaugment+erasing / crop+flip =" in md
    assert "µs of host time per step" in md and "from CPU time" in md
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


def test_memory_section_pairs_fresh_processes(make_cfg, tmp_path: Path) -> None:
    """`sections=[memory]`: glibc's default and host_memory=retain, each window a fresh
    process; the retained one faults in a fraction of the pages per step."""
    # (the global timing knobs override every section's: warm-up steps let the heap settle)
    cfg = make_cfg(*TINY, "sections=[memory]", "memory.model=resnet20", "memory.batch_size=32",
                   "memory.image_size=32", "warmup_steps=6", "window_steps=2",
                   config_name="benchmark", out="mem")
    run_benchmark(cfg)
    table = _rows(tmp_path / "mem" / "benchmark.csv")
    assert [r["variant"] for r in table] == ["system", "retain"]
    assert all(_positive(r, "ms_per_step") and _positive(r, "cpu_ms_per_step") for r in table)
    assert float(table[0]["ratio"]) == 1.0 and _positive(table[1], "ratio")
    faults = [float(re.search(r"minor faults/step ([\d,]+)", r["note"]).group(1)
                    .replace(",", "")) for r in table]
    # retained pages are reused (the heap may still grow a little after a few steps; glibc's
    # default faults in thousands of pages at every step)
    assert 4 * faults[1] < faults[0], faults
    md = (tmp_path / "mem" / "benchmark.md").read_text()
    assert "Host memory on the CPU" in md and "retain / system =" in md
