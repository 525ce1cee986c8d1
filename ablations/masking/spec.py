"""Mask specifications as data: which interaction is removed in which layers and heads.

A :class:`MaskSpec` is a plain, JSON-serialisable list of :class:`Rule` s: *remove this interaction in
these layers (and heads)*. It does not depend on a model: ``layers="all"`` or ``"0-6"`` are resolved
against a model only when the spec is compiled (:func:`ablations.masking.masks.compile_mask`). This module
needs no torch, so the command lines check a spec's syntax before they load anything heavy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ablations.masking.interactions import check_interaction, valid_names
from probe.errors import BadInput
from probe.ranges import parse_ranges

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------- spec
@dataclass
class Rule:
    """Remove ``interaction`` (a name or a preset, see :mod:`ablations.masking.interactions`) in ``layers``
    and ``heads`` (range strings, ``"all"`` by default)."""

    interaction: str
    layers: str = "all"
    heads: str = "all"

    def __post_init__(self):
        self.interaction = str(self.interaction).strip()
        self.layers = str(self.layers).strip()
        self.heads = str(self.heads).strip()
        check_interaction(self.interaction)
        parse_ranges(self.layers, "layers")
        parse_ranges(self.heads, "heads")

    @property
    def label(self) -> str:
        out = self.interaction
        if self.layers.lower() != "all":
            out += f"[{self.layers}]"
        if self.heads.lower() != "all":
            out += f"{{h{self.heads}}}"
        return out


@dataclass
class MaskSpec:
    """Which interactions are removed in which layers (and heads). JSON round-trips exactly."""

    rules: list[Rule] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    #: ``(num_layers, num_heads)`` of the model the spec was made on (a search result, a MICE
    #: configuration), or ``None`` (written by hand: layer ranges are clamped to any model). A spec made
    #: for another shape is refused by :func:`compile_mask`.
    made_for: tuple[int, int] | None = None

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise BadInput(
                f"mask spec schema_version {self.schema_version!r}; this toolkit reads {SCHEMA_VERSION}"
            )
        self.rules = [r if isinstance(r, Rule) else Rule(**_rule_fields(r)) for r in self.rules]
        if self.made_for is not None:
            self.made_for = _made_for(self.made_for)

    # --- serialisation
    def to_dict(self) -> dict:
        out = {
            "schema_version": self.schema_version,
            "rules": [
                {"interaction": r.interaction, "layers": r.layers, "heads": r.heads} for r in self.rules
            ],
        }
        if self.made_for is not None:
            out["made_for"] = {"num_layers": self.made_for[0], "num_heads": self.made_for[1]}
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> MaskSpec:
        if not isinstance(data, dict) or "rules" not in data:
            raise BadInput(
                f"a mask spec is a JSON object with 'rules' and 'schema_version', got {str(data)[:80]!r}"
            )
        unknown = set(data) - {"rules", "schema_version", "made_for"}
        if unknown:
            raise BadInput(
                f"mask spec: unknown field {sorted(unknown)[0]!r}; expected rules, schema_version, made_for"
            )
        made_for = data.get("made_for")
        if isinstance(made_for, dict):
            made_for = (made_for.get("num_layers"), made_for.get("num_heads"))
        return cls(
            rules=list(data["rules"]),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
            made_for=made_for,
        )

    @classmethod
    def from_json(cls, text: str) -> MaskSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"mask spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    # --- convenience
    @classmethod
    def remove(cls, *interactions: str, layers: str = "all", heads: str = "all") -> MaskSpec:
        return cls([Rule(i, layers, heads) for i in interactions])

    def __add__(self, other: MaskSpec) -> MaskSpec:
        shapes = {m for m in (self.made_for, other.made_for) if m is not None}
        if len(shapes) > 1:
            raise BadInput(f"cannot combine mask specs made for {' and '.join(map(_shape, sorted(shapes)))}")
        return MaskSpec([*self.rules, *other.rules], made_for=next(iter(shapes), None))

    def for_model(self, num_layers: int, num_heads: int) -> MaskSpec:
        """The same rules, marked as made on a model of that shape (what search results record)."""
        return MaskSpec(list(self.rules), self.schema_version, (num_layers, num_heads))

    @property
    def label(self) -> str:
        return " + ".join(r.label for r in self.rules) or "none"

    def require_rules(self) -> MaskSpec:
        if not self.rules:
            raise BadInput(
                "empty mask: nothing to remove; give at least one --remove INTERACTION "
                "(e.g. --remove doc2query)"
            )
        return self


def parse_rules(
    items: Sequence[str], layers: str = "all", heads: str = "all", *, what: str = "--remove"
) -> list[Rule]:
    """Rules from ``INTERACTION[:LAYERS[:HEADS]]`` items (the CLIs' ``--remove``, the explorer's toggles);
    an item without its own layers / heads takes ``layers`` / ``heads``. Only the syntax is checked."""
    rules = []
    for item in items:
        parts = item.split(":")
        if len(parts) > 3 or not parts[0].strip():
            raise BadInput(
                f"{what} {item!r}: expected INTERACTION[:LAYERS[:HEADS]]; interactions: {valid_names()}"
            )
        own_layers = parts[1] if len(parts) > 1 and parts[1].strip() else layers
        own_heads = parts[2] if len(parts) > 2 and parts[2].strip() else heads
        rules.append(Rule(parts[0], own_layers, own_heads))
    return rules


def read_spec(path, *, what: str = "--spec") -> MaskSpec:
    """The mask spec a JSON file holds (a spec, a search result, a MICE configuration: see
    :func:`spec_from_document`); an unreadable one is refused in one line naming ``what``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return spec_from_document(data, f"{what} {str(path)!r}")


def spec_from_document(data: dict, source: str = "the file") -> MaskSpec:
    """A mask spec from a JSON document: a MaskSpec (``rules``), a search result (``removed``), or a
    document wrapping one under ``mask`` / ``spec`` / ``mask_spec``."""
    if "rules" in data:
        return MaskSpec.from_dict(data)
    for key in ("mask", "mask_spec", "spec", "removed"):
        inner = data.get(key)
        if isinstance(inner, str):
            try:
                inner = json.loads(inner)
            except ValueError:
                continue
        if isinstance(inner, dict) and "rules" in inner:
            spec = MaskSpec.from_dict(inner)
            if spec.made_for is None and {"num_layers", "num_heads"} <= set(data):  # a MICE configuration
                spec = spec.for_model(data["num_layers"], data["num_heads"])
            return spec
    raise BadInput(
        f"{source} holds no mask spec: expected a MICE configuration (ablations.mice.config), an "
        "object with 'rules' (a MaskSpec), or one under 'mask', 'mask_spec', 'spec' or 'removed' "
        "(search.json)"
    )


def _made_for(value) -> tuple[int, int]:
    try:
        layers, heads = value
    except (TypeError, ValueError):
        layers = heads = None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (layers, heads)):
        raise BadInput(
            f"mask spec made_for {value!r}: expected {{'num_layers': L, 'num_heads': H}} with L, H >= 1"
        )
    return (layers, heads)


def _shape(made_for: tuple[int, int]) -> str:
    return f"{made_for[0]} layers × {made_for[1]} heads"


def _rule_fields(r) -> dict:
    if isinstance(r, dict):
        unknown = set(r) - {"interaction", "layers", "heads"}
        if unknown or "interaction" not in r:
            raise BadInput(f"mask spec rule {r!r}: expected keys interaction, layers, heads")
        return r
    if isinstance(r, (list, tuple)) and 1 <= len(r) <= 3:
        return dict(zip(("interaction", "layers", "heads"), r))
    raise BadInput(f"mask spec rule {r!r}: expected an object with interaction, layers, heads")


def base_spec(value: str | None, *, what: str = "--base") -> MaskSpec:
    """The mask every cell sits on: an interaction or preset (all layers), or a JSON spec file."""
    if not value:
        return MaskSpec()
    path = Path(value)
    if path.suffix == ".json" or path.is_file():
        return read_spec(path, what=what)
    return MaskSpec([Rule(value)])


def check_grid(interactions: Sequence[str], layer_units: Sequence[str], head_groups: Sequence[str]) -> None:
    """The syntax of a sweep or search grid (interaction names, layer units, head groups), checked without a
    model: one line naming the bad value."""
    for name in interactions:
        check_interaction(name)
    for unit in layer_units:
        if unit != "each":
            parse_ranges(unit, "layers")
    for group in head_groups:
        parse_ranges(group, "heads")
