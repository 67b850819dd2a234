"""requirements/lock.txt is the set CI installs, and it agrees with pyproject.toml.

Three checks, all offline: every line of the lock is an exact pin with hashes; every dependency
that pyproject.toml names (the package's own and its `dev` extra, through the
`classicnets[...]` extras it includes) and every pin of requirements/ci.in is in the lock at a
version its specifier allows; and this environment has those packages at the lock's versions,
so a CI run that did not install from the lock fails here.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
CI_IN = REPO / "requirements" / "ci.in"
PROJECT = "classicnets"
REGENERATE = "requirements/update-lock.sh"
INSTALL = "pip install --require-hashes -r requirements/lock.txt"
# the environment markers of what the lock is for: CI's CPython 3.11 on Linux x86_64
LOCK_ENV = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?P<rest>.*)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def lock_entries(text: str) -> list[str]:
    """The lock's requirement lines, each with its backslash-continued lines joined."""
    entries: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            entries.append(current.strip())
            current = ""
    if current:
        entries.append(current.strip())
    return entries


def read_lock(text: str) -> tuple[dict[str, Version], list[str]]:
    """The lock's pins (canonical name -> version) and what is wrong with its lines."""
    pins: dict[str, Version] = {}
    problems: list[str] = []
    for entry in lock_entries(text):
        match = PIN.fullmatch(entry)
        if match is None:
            problems.append(f"not an exact `name==version` pin: {entry[:80]!r}")
            continue
        name = canonicalize_name(match["name"])
        try:
            version = Version(match["version"])
        except InvalidVersion:
            problems.append(f"{name}: {match['version']!r} is not a version")
            continue
        if "*" in match["version"]:
            problems.append(f"{name}: a wildcard is not an exact pin")
        rest = HASH.sub("", match["rest"]).strip()
        if not HASH.search(match["rest"]):
            problems.append(f"{name}=={version} has no --hash=sha256:...")
        elif rest:
            problems.append(f"{name}=={version}: unexpected {rest!r} after the pin")
        if name in pins:
            problems.append(f"{name} is pinned twice")
        if name == PROJECT:
            problems.append(f"{PROJECT} itself is in the lock (install it with --no-deps -e .)")
        pins[name] = version
    return pins, problems


def _applies(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**LOCK_ENV, "extra": extra})


def pyproject_requirements(pyproject: dict,
                           extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """[project].dependencies and the named extras, expanding the project's own extras."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    found = [Requirement(spec) for spec in project.get("dependencies", [])]
    found = [req for req in found if _applies(req)]
    todo, done = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        for spec in optional[extra]:
            req = Requirement(spec)
            if not _applies(req, extra):
                continue
            if canonicalize_name(req.name) == PROJECT:
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


def disagreements(requirements: list[Requirement], pins: dict[str, Version],
                  source: str) -> list[str]:
    """One line per requirement the lock lacks or pins outside its specifier."""
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{name}: {source} requires {req}, requirements/lock.txt lacks it")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}: {source} requires {req}, requirements/lock.txt pins "
                            f"{pins[name]}")
    return problems


def _failure(problems: list[str], fix: str) -> str:
    return "\n".join([*problems, f"-> {fix}"])


def _direct_requirements() -> list[tuple[Requirement, str]]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    ci = [Requirement(line) for line in lock_entries(CI_IN.read_text())]
    return ([(req, "pyproject.toml") for req in pyproject_requirements(pyproject)]
            + [(req, "requirements/ci.in") for req in ci])


def test_every_lock_line_is_an_exact_pin_with_hashes() -> None:
    pins, problems = read_lock(LOCK.read_text())
    assert pins, "requirements/lock.txt pins nothing"
    assert not problems, _failure(problems, f"regenerate the lock: {REGENERATE}")


def test_lock_satisfies_pyproject_and_ci_pins() -> None:
    pins, _ = read_lock(LOCK.read_text())
    problems = []
    for source in ("pyproject.toml", "requirements/ci.in"):
        reqs = [req for req, src in _direct_requirements() if src == source]
        problems += disagreements(reqs, pins, source)
    assert not problems, _failure(problems, f"regenerate the lock: {REGENERATE}")


def test_ci_in_pins_are_exact() -> None:
    for req, source in _direct_requirements():
        if source == "requirements/ci.in":
            assert [spec.operator for spec in req.specifier] == ["=="], (
                f"requirements/ci.in: {req} must be an exact `==` pin")


def test_this_environment_has_the_locked_versions() -> None:
    """What CI runs the tests in is what the lock says (it installed from the lock)."""
    pins, _ = read_lock(LOCK.read_text())
    problems = []
    for req, _source in _direct_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            continue  # reported by test_lock_satisfies_pyproject_and_ci_pins
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed, requirements/lock.txt pins {pins[name]}")
            continue
        if installed != pins[name]:
            problems.append(f"{name}: installed {installed}, requirements/lock.txt pins "
                            f"{pins[name]}")
    assert not problems, _failure(problems, f"install from the lock: {INSTALL}")


# The checks themselves, on made-up files: they catch what they are meant to catch.

def test_read_lock_flags_loose_unhashed_and_self_lines() -> None:
    text = ("# a comment\n"
            "good==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n"
            "loose>=1.0 --hash=sha256:" + "b" * 64 + "\n"
            "nohash==2.0\n"
            "classicnets==0.1.0 --hash=sha256:" + "c" * 64 + "\n"
            "-e file:///somewhere\n")
    pins, problems = read_lock(text)
    assert pins["good"] == Version("1.0")
    assert any("loose>=1.0" in p and "exact" in p for p in problems)
    assert any(p.startswith("nohash==2.0 has no --hash") for p in problems)
    assert any("classicnets itself" in p for p in problems)
    assert any("-e file:" in p for p in problems)


def test_disagreement_names_the_package_and_the_fix() -> None:
    pyproject = {"project": {
        "dependencies": ["lightning>=2.6.6", "only-windows>=1; sys_platform == 'win32'"],
        "optional-dependencies": {"dev": ["pytest>=9", "classicnets[export]"],
                                  "export": ["onnx>=1.21"]}}}
    reqs = pyproject_requirements(pyproject)
    assert sorted(canonicalize_name(r.name) for r in reqs) == ["lightning", "onnx", "pytest"]
    pins = {"lightning": Version("2.6.3"), "pytest": Version("9.0.3")}
    problems = disagreements(reqs, pins, "pyproject.toml")
    assert problems == [
        "lightning: pyproject.toml requires lightning>=2.6.6, requirements/lock.txt pins 2.6.3",
        "onnx: pyproject.toml requires onnx>=1.21, requirements/lock.txt lacks it"]
    assert _failure(problems, f"regenerate the lock: {REGENERATE}").endswith(
        "-> regenerate the lock: requirements/update-lock.sh")


def test_readme_and_ci_install_from_the_lock() -> None:
    """The README's one-line install and .ci/run install the same lock the same way."""
    readme = (REPO / "README.md").read_text()
    install = re.findall(r"```bash\n(.*?)```", readme, re.S)[0].strip()
    ci = (REPO / ".ci" / "run").read_text()
    for args in ("--require-hashes -r requirements/lock.txt",
                 "--no-deps --no-build-isolation -e ."):
        assert f"pip install {args}" in install, f"README install lacks `pip install {args}`"
        assert f"python3 -m pip install --quiet {args}" in ci, f".ci/run lacks `{args}`"
    commands = "\n".join(line for line in ci.splitlines() if not line.lstrip().startswith("#"))
    assert "torch==" not in commands and "[dev]" not in commands, (
        ".ci/run installs packages beside the lock")
