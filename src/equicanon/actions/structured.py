"""Structured predictions: predictors that return tuples, dicts or dataclasses, each part with its own action.

A wrapper maps a prediction back through the pose part by part: :func:`apply_action` applies one action to every
tensor of a nested prediction, and :class:`Structured` gives each top-level key (dict, dataclass) or position
(tuple, list) its own action. :func:`flatten` / :func:`unflatten` take a prediction apart into its tensors and
put it back together, so that averaging wrappers can average tensor by tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch

from ..errors import ConfigError, DTypeError, GroupMismatchError
from ..groups import Group
from .base import Action, Trivial

__all__ = ["Structured", "apply_action", "as_output_action", "flatten", "unflatten", "map_tensors"]

#: values that a prediction may hold besides tensors; they are passed through as they are
_PLAIN = (int, float, bool, str, bytes, type(None))


def _is_dataclass_instance(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _fields(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def _rebuild(like: object, values: dict[str, Any]) -> Any:
    """A dataclass like ``like`` with its fields set to ``values`` (init fields through the constructor)."""
    init = {f.name: values[f.name] for f in dataclasses.fields(like) if f.init}  # type: ignore[arg-type]
    out = type(like)(**init)
    for f in dataclasses.fields(like):  # type: ignore[arg-type]
        if not f.init:
            object.__setattr__(out, f.name, values[f.name])
    return out


def _unsupported(obj: object) -> DTypeError:
    return DTypeError(f"a prediction must be a tensor, or a tuple, list, dict or dataclass of tensors (and plain "
                      f"values: numbers, strings, None), got {type(obj).__name__}")


# --------------------------------------------------------------------------------------------- flatten

#: how a prediction is put back together: ("tensor",), ("plain", value), ("mapping", type, keys, children),
#: ("dataclass", like, names, children), ("sequence", type, children)
TreeDef = tuple[Any, ...]


def flatten(obj: Any) -> tuple[list[torch.Tensor], TreeDef]:
    """The tensors of a prediction, in a fixed order (depth first; dict keys as they are), and how to rebuild it."""
    leaves: list[torch.Tensor] = []

    def walk(o: Any) -> TreeDef:
        if isinstance(o, torch.Tensor):
            leaves.append(o)
            return ("tensor",)
        if isinstance(o, _PLAIN):
            return ("plain", o)
        if isinstance(o, Mapping):
            keys = tuple(o.keys())
            return ("mapping", type(o), keys, tuple(walk(o[k]) for k in keys))
        if _is_dataclass_instance(o):
            values = _fields(o)
            return ("dataclass", o, tuple(values), tuple(walk(v) for v in values.values()))
        if isinstance(o, (tuple, list)):
            return ("sequence", type(o), tuple(walk(v) for v in o))
        raise _unsupported(o)

    tree = walk(obj)
    return leaves, tree


def unflatten(tree: TreeDef, leaves: Sequence[Any]) -> Any:
    """Inverse of :func:`flatten`: the prediction of ``tree`` holding ``leaves`` (in :func:`flatten`'s order)."""
    it = iter(leaves)

    def build(t: TreeDef) -> Any:
        kind = t[0]
        if kind == "tensor":
            return next(it)
        if kind == "plain":
            return t[1]
        if kind == "mapping":
            values = {k: build(c) for k, c in zip(t[2], t[3], strict=True)}
            return values if t[1] is dict else t[1](values)
        if kind == "dataclass":
            return _rebuild(t[1], {k: build(c) for k, c in zip(t[2], t[3], strict=True)})
        kind_type, children = t[1], [build(c) for c in t[2]]
        return kind_type(*children) if hasattr(kind_type, "_fields") else kind_type(children)

    return build(tree)


def map_tensors(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (tuples, lists, dicts and dataclasses are rebuilt with
    the same type; plain values are kept); a :class:`DTypeError` for any other type."""
    leaves, tree = flatten(obj)
    return unflatten(tree, [fn(t) for t in leaves])


# --------------------------------------------------------------------------------------------- actions

def apply_action(action: Action, g: torch.Tensor, prediction: Any) -> Any:
    """``g ⋆ prediction``: ``action`` on a tensor, a :class:`Structured` action on its structure, or any other
    action on every tensor of a nested prediction."""
    if isinstance(prediction, torch.Tensor) or isinstance(action, Structured):
        return action(g, prediction)
    if isinstance(action, Trivial):
        flatten(prediction)  # refuse unsupported types here too
        return prediction
    return map_tensors(lambda t: action(g, t), prediction)


class Structured(Action):
    """One action per part of a structured prediction: ``{key: action}`` for dicts and dataclasses (their
    top-level keys or fields), ``[action, ...]`` for tuples and lists (by position).

    Each part's action applies to every tensor inside that part (:func:`apply_action`). Every key of the
    prediction needs an action; a key that is missing (or one too many) is a :class:`ConfigError` naming it.
    All actions must share one group (or accept any, like :class:`Trivial`).

    Example:
        >>> out = Structured({"logits": Trivial(), "mask": Image(C(4))})  # doctest: +SKIP
        >>> out(pose, {"logits": logits, "mask": mask})  # doctest: +SKIP
    """

    def __init__(self, parts: Mapping[str, Action] | Sequence[Action]) -> None:
        if isinstance(parts, Mapping):
            self.parts: dict[Any, Action] | list[Action] = dict(parts)
            items = list(self.parts.items())
        elif isinstance(parts, (tuple, list)):
            self.parts = list(parts)
            items = list(enumerate(self.parts))
        else:
            raise ConfigError(f"Structured: expected a dict of actions or a list of actions, got {type(parts).__name__}")
        if not items:
            raise ConfigError("Structured: give at least one action")
        groups: list[Group] = []
        for key, action in items:
            if not isinstance(action, Action):
                raise ConfigError(f"Structured: the action for {key!r} must be an equicanon Action, got "
                                  f"{type(action).__name__}")
            if action.group is not None and all(action.group != g for g in groups):
                groups.append(action.group)
        if len(groups) > 1:
            raise GroupMismatchError(f"Structured: the actions use different groups: {', '.join(map(repr, groups))}")
        self.group = groups[0] if groups else None
        self.exact = all(a.exact for _, a in items)

    def __repr__(self) -> str:
        if isinstance(self.parts, dict):
            return "Structured({" + ", ".join(f"{k!r}: {a!r}" for k, a in self.parts.items()) + "})"
        return "Structured([" + ", ".join(map(repr, self.parts)) + "])"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Structured) and self.parts == other.parts

    def __hash__(self) -> int:
        return hash(repr(self))

    def _check_keys(self, have: Sequence[Any], what: str) -> None:
        wanted = list(self.parts) if isinstance(self.parts, dict) else list(range(len(self.parts)))
        missing = [k for k in have if k not in wanted]
        extra = [k for k in wanted if k not in have]
        if missing or extra:
            parts = []
            if missing:
                parts.append("no action for " + ", ".join(map(repr, missing)))
            if extra:
                parts.append("an action for " + ", ".join(map(repr, extra)) + " that the prediction does not have")
            raise ConfigError(f"output actions {self!r} do not match the prediction ({what}): " + "; ".join(parts))

    def __call__(self, g: torch.Tensor, x: Any) -> Any:
        if isinstance(self.parts, dict):
            if isinstance(x, Mapping):
                self._check_keys(list(x.keys()), f"a {type(x).__name__} with keys {list(x.keys())}")
                values = {k: apply_action(self.parts[k], g, v) for k, v in x.items()}
                return values if type(x) is dict else cast(Any, type(x))(values)
            if _is_dataclass_instance(x):
                fields = _fields(x)
                self._check_keys(list(fields), f"a {type(x).__name__} with fields {list(fields)}")
                return _rebuild(x, {k: apply_action(self.parts[k], g, v) for k, v in fields.items()})
            raise DTypeError(f"output actions {self!r} are by key, for a dict or dataclass prediction; the predictor "
                             f"returned {type(x).__name__}")
        if isinstance(x, (tuple, list)):
            self._check_keys(list(range(len(x))), f"a {type(x).__name__} of length {len(x)}")
            moved = [apply_action(a, g, v) for a, v in zip(self.parts, x, strict=True)]
            return type(x)(*moved) if hasattr(type(x), "_fields") else type(x)(moved)
        raise DTypeError(f"output actions {self!r} are by position, for a tuple or list prediction; the predictor "
                         f"returned {type(x).__name__}")

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Any:
        def one(a: Action) -> Any:
            return a.example(batch, generator=generator, dtype=dtype, device=device)

        if isinstance(self.parts, dict):
            return {k: one(a) for k, a in self.parts.items()}
        return tuple(one(a) for a in self.parts)


def as_output_action(output: Action | Mapping[str, Action] | Sequence[Action] | None) -> Action:
    """A wrapper's ``output=`` as one action: :class:`Trivial` for ``None``, an action as it is, a dict or a list of
    actions as :class:`Structured`."""
    if output is None:
        return Trivial()
    if isinstance(output, Action):
        return output
    if isinstance(output, (Mapping, tuple, list)):
        return Structured(output)
    raise ConfigError(f"output must be an equicanon Action, a dict of actions (one per key of the prediction) or a "
                      f"list of actions (one per position), got {type(output).__name__}")
