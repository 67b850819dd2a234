"""Config mistakes caught before anything is built, with the valid keys in the message.

* A misspelled key on the command line (``trainer.max_epoch=5``) is refused by Hydra, whose
  message names the key but not what exists: :func:`explain_override_error` recomposes the
  failed command and says which keys the group has, and the closest one.
* An argument the target does not take (``+trainer.max_epoch=5``) or a value of the wrong type
  (``trainer.max_epochs=ten``, ``optimizer.lr=fast``) would fail deep inside Lightning or
  PyTorch, or not at all: :func:`check_config` compares every instantiated group with its
  target's signature first.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

__all__ = ["ConfigError", "check_config", "explain_override_error"]

# groups whose value is one _target_ call; callbacks and logger hold several
SINGLE_TARGETS = ("trainer", "data", "model", "optimizer")
MANY_TARGETS = ("callbacks", "logger")
_SCALARS = (int, float, bool, str, type(None))


class ConfigError(ValueError):
    """A config key or value that cannot work; the message names the valid choices."""


def _keys_text(keys: Iterable[str]) -> str:
    return ", ".join(sorted(k for k in keys if not k.startswith("_")))


def _close(word: str, keys: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(keys), n=1, cutoff=0.6)
    return f" Did you mean {match[0]}?" if match else ""


# ---------------------------------------------------------------------- misspelled overrides
def explain_override_error(config_name: str, overrides: list[str]) -> str | None:
    """Why ``overrides`` fail to compose, when a key does not exist: the valid keys of the node
    it was meant for. None when they compose, or fail for another reason (Hydra's message then
    says enough, e.g. an unknown ``model=`` option lists the options)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    from classicnets.paths import CONFIG_DIR

    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in overrides if not a.startswith("-")])
    except Exception:  # a syntax error: Hydra's own message is the right one
        return None
    base: list[str] = []  # group choices, additions, deletions: composed as given
    keys: list[str] = []  # plain value changes: the keys under test
    for override in parsed:
        key = override.key_or_group
        is_group = ("/" in key or key.startswith("hydra")
                    or (CONFIG_DIR / key.replace(".", "/")).is_dir())
        if override.type == OverrideType.CHANGE and not is_group:
            keys.append(key)
        elif override.is_sweep_override():
            # a sweep composes like its first value (an Optuna interval has none: left out)
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:
                continue
            base.append(f"{override.get_key_element()}={first}")
        else:
            base.append(override.input_line)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=base)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            # keys(), not `in`: a mandatory value (`???`, e.g. ckpt_path) is not "in" a config
            if leaf not in node.keys():  # noqa: SIM118
                where = parent or "the top level"
                return (f"{key} is not a key of {where}. Valid keys of {where}: "
                        f"{_keys_text(node.keys())}.{_close(leaf, node.keys())} "
                        f"(+{key}=... adds a new key)")
        elif parent:
            return _missing_parent(cfg, key)
    return None


def _missing_parent(cfg: DictConfig, key: str) -> str | None:
    """The first part of a dotted ``key`` that does not exist, with the valid keys there."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, DictConfig):
            return None
        if part not in node.keys():  # noqa: SIM118 (as above)
            where = ".".join(parts[:i]) or "the top level"
            return (f"{key}: {where} has no key {part!r}. Valid keys of {where}: "
                    f"{_keys_text(node.keys())}.{_close(part, node.keys())}")
        node = node[part]
    return None


# ---------------------------------------------------------------------- arguments and types
def _allowed(annotation: Any) -> set[Any] | None:
    """What a config value may be for a parameter annotated so: scalar types and literal
    values; None when the annotation admits other objects too (nothing is checked then)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        allowed: set[Any] = set()
        for arg in get_args(annotation):
            sub = _allowed(arg)
            if sub is None:
                return None
            allowed |= sub
        return allowed
    if origin is Literal:
        return {("literal", value) for value in get_args(annotation)}
    if annotation in _SCALARS:
        return {annotation}
    import torch

    if annotation is torch.Tensor:  # a learning rate "float | Tensor": from YAML, a number
        return {float}
    return None


def _fits(value: Any, allowed: set[Any]) -> bool:
    if not isinstance(value, _SCALARS):
        return True  # lists and mappings: not checked here
    literals = [a[1] for a in allowed if isinstance(a, tuple)]
    if any(value == v and type(value) is type(v) for v in literals):
        return True
    kind = type(value)
    if kind is bool:
        return bool in allowed
    if kind in (int, float) and str in allowed:
        return True  # YAML reads `variant: 1998` as a number; the target gets its text
    if kind is int:
        return int in allowed or float in allowed
    return kind in allowed


def _describe(allowed: set[Any]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             type(None): "null"}
    parts = [names[a] for a in (int, float, bool, str, type(None)) if a in allowed
             and not (a is int and float in allowed)]
    parts += sorted(repr(a[1]) for a in allowed if isinstance(a, tuple))
    return " or ".join(parts)


def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target, eval_str=True)
    except Exception:  # an annotation that does not resolve: names only
        try:
            return inspect.signature(target)
        except (TypeError, ValueError):
            return None


def _target_of(node: Mapping[str, Any]) -> Callable[..., Any] | None:
    target = node.get("_target_")
    if not isinstance(target, str):
        return None
    try:
        fn = get_method(target)
    except Exception:  # a typo in _target_: instantiate's own error names it
        return None
    if target == "classicnets.models.create_model" and isinstance(node.get("name"), str):
        from classicnets.models import get_model_info

        try:
            return get_model_info(node["name"]).builder
        except Exception:  # an unknown name: create_model lists the close ones
            return None
    return fn


def _check_call(path: str, node: Mapping[str, Any], target: Callable[..., Any],
                skip: Iterable[str] = ()) -> None:
    sig = _signature(target)
    if sig is None:
        return
    params = {n: p for n, p in sig.parameters.items() if n not in ("self", *skip)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    name = getattr(target, "__qualname__", str(target))
    for key, value in node.items():
        if key.startswith("_") or key in skip:
            continue
        param = params.get(key)
        if param is None:
            if not takes_any:
                raise ConfigError(
                    f"{path}.{key} is not an argument of {name}. Valid keys of {path}: "
                    f"{_keys_text(valid)}.{_close(key, valid)}")
            continue
        allowed = _allowed(param.annotation)
        if allowed is not None and not _fits(value, allowed):
            raise ConfigError(
                f"{path}.{key}={value!r} is not valid: {name} takes {_describe(allowed)} for "
                f"{key} (e.g. {path}.{key}={_example(param, allowed)})")


def _example(param: inspect.Parameter, allowed: set[Any]) -> str:
    default = param.default
    if default is not inspect.Parameter.empty and default is not None:
        return str(default).lower() if isinstance(default, bool) else str(default)
    for kind, text in ((int, "10"), (float, "0.1"), (bool, "true"), (str, "name")):
        if kind in allowed:
            return text
    return next((str(a[1]) for a in allowed if isinstance(a, tuple)), "null")


def resolved(node: DictConfig) -> Any:
    """``node`` as plain containers, resolved. An error of ours raised by a resolver (e.g.
    ``${pretrained:...}`` reading a refused weights file) comes out as itself, not wrapped in
    OmegaConf's InterpolationResolutionError."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        return OmegaConf.to_container(node, resolve=True)
    except InterpolationResolutionError as err:
        cause: BaseException | None = err  # OmegaConf chains the resolver's error as context
        while cause is not None and not type(cause).__module__.startswith("classicnets"):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def check_config(cfg: DictConfig) -> None:
    """Refuse arguments a group's target does not take, and scalar values of the wrong type,
    naming the valid keys (trainer, data, model, optimizer, module, callbacks, logger)."""
    from classicnets.training.module import ImageClassifier

    for group in SINGLE_TARGETS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            plain = resolved(node)
            target = _target_of(plain)
            if target is None:
                continue
            skip: tuple[str, ...] = ("params",)  # the optimizer's: filled in later
            if group == "model":  # create_model's own arguments (name, pretrained), then the
                # builder's
                own = _signature(get_method(str(plain["_target_"])))
                skip = tuple(own.parameters) if own is not None else ("name",)
            _check_call(group, plain, target, skip=skip)
    module = cfg.get("module")
    if isinstance(module, DictConfig):
        _check_call("module", resolved(module), ImageClassifier,
                    skip=("model", "optimizer", "scheduler"))
    for group in MANY_TARGETS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        for name in node:
            sub = node.get(name)
            if isinstance(sub, DictConfig):
                plain = resolved(sub)
                target = _target_of(plain)
                if target is not None:
                    _check_call(f"{group}.{name}", plain, target)
