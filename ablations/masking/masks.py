"""Mask specifications as data, and their compilation into per-layer attention biases.

A :class:`MaskSpec` is a plain, JSON-serialisable list of :class:`Rule` s: *remove this interaction in
these layers (and heads)*. It does not depend on a model: ``layers="all"`` or ``"0-6"`` are resolved
against a model only when the spec is compiled (:func:`compile_mask`).

Compilation gives a small boolean table ``allowed[layer, head|1, source role, target role]`` over the
six token roles (:mod:`probe.roles`). Only per batch is it expanded to tokens: the table is indexed with
``roles[:, :, None]`` (attending token) and ``roles[:, None, :]`` (attended token) into a
``(batch, heads|1, q, k)`` additive bias (0 keeps, -inf removes), once per *distinct* layer table, and
handed to :func:`probe.attention.attention_context`. Two guarantees:

- padding is never touched (the model's own padding mask removes padded keys);
- a token whose every key would be removed keeps attention to itself (the diagonal), so no attention row
  is empty and no NaN can appear.

Layer and head ranges are 0-based and inclusive: ``0-6``, ``0-2,5``, ``all`` (parsed by :mod:`probe.ranges`;
import the range functions from there). A layer range whose end runs past the last layer is clamped with a
one-line notice (``layers 0-6 → 0-5: the model has 6 layers``); a range that starts past it is an error.
Head ranges follow the same rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ablations.masking.interactions import parse_interaction, preset_rules
from ablations.masking.spec import (  # noqa: F401 - the spec API, re-exported
    SCHEMA_VERSION,
    MaskSpec,
    Rule,
    _shape,
    parse_rules,
    read_spec,
    spec_from_document,
)
from probe.errors import BadInput
from probe.ranges import format_ranges, parse_ranges, resolve_ranges  # noqa: F401 - parse_ranges re-exported
from probe.roles import N_ROLES, ROLE_NAMES, Role


# ----------------------------------------------------------------------------------------- compiled
@dataclass
class CompiledMask:
    """A spec resolved against a model: ``allowed[layer, head|1, source role, target role]`` (bool).

    ``groups[layer]`` is the index of the layer's distinct table in ``tables`` or -1 when nothing is
    removed in that layer; identical layers share one table and one bias per batch.
    """

    spec: MaskSpec
    allowed: torch.Tensor
    notices: list[str]
    num_layers: int
    num_heads: int
    groups: list[int] = field(default_factory=list)
    tables: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self):
        keys: dict[bytes, int] = {}
        self.groups, self.tables = [], []
        for layer in range(self.num_layers):
            tab = self.allowed[layer]
            if bool(tab.all()):
                self.groups.append(-1)
                continue
            key = tab.numpy().tobytes()
            if key not in keys:
                keys[key] = len(self.tables)
                self.tables.append(tab.contiguous())
            self.groups.append(keys[key])

    # --- description
    def key(self) -> str:
        """A hash of the compiled table (expanded over heads): equal for masks that remove the same
        attention, whatever their spelling (``doc2query`` and ``doc2query[0-99]`` clamped, all heads named
        or ``all``)."""
        table = self.allowed.expand(-1, self.num_heads, -1, -1).contiguous()
        return hashlib.sha1(table.numpy().tobytes() + str(tuple(table.shape)).encode()).hexdigest()

    @property
    def masked_layers(self) -> tuple[int, ...]:
        return tuple(i for i, g in enumerate(self.groups) if g >= 0)

    @property
    def first_layer(self) -> int | None:
        """First layer with a removal (``None`` if nothing is removed): earlier layers equal the full
        model's."""
        layers = self.masked_layers
        return layers[0] if layers else None

    @property
    def is_empty(self) -> bool:
        return not self.masked_layers

    @property
    def per_head(self) -> bool:
        return self.allowed.shape[1] > 1

    def masked_heads(self) -> tuple[int, ...]:
        if not self.per_head:
            return tuple(range(self.num_heads)) if not self.is_empty else ()
        removed = ~self.allowed.reshape(self.num_layers, self.allowed.shape[1], -1).all(-1)
        return tuple(int(h) for h in removed.any(0).nonzero().flatten())

    def affected_sources(self, layer: int) -> set[int]:
        """Roles (codes) whose tokens lose at least one key in ``layer`` (in any head)."""
        return {int(r) for r in (~self.allowed[layer]).any(-1).any(0).nonzero().flatten()}

    def removed_pairs(self, layer: int) -> list[tuple[str, str]]:
        """``[(source, target), ...]`` removed in ``layer`` (in any head)."""
        gone = ~self.allowed[layer].all(0)
        return [(ROLE_NAMES[s], ROLE_NAMES[t]) for s, t in gone.nonzero().tolist()]

    def describe(self) -> str:
        if self.is_empty:
            return "nothing removed"
        heads = "" if not self.per_head else f", heads {format_ranges(self.masked_heads())}"
        return f"{self.spec.label} → layers {format_ranges(self.masked_layers)}{heads}"

    # --- expansion to tokens
    def bias_fn(
        self, roles: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> Callable[[int], torch.Tensor | None]:
        """``layer -> additive bias (batch, heads|1, q, k) | None`` for one batch of token ``roles``.

        Each distinct layer table is expanded once per batch, on first use.
        """
        cache: dict[int, torch.Tensor] = {}
        code: list[torch.Tensor] = []  # the (b, q, k) role-pair code, shared by the batch's tables

        def bias(layer: int) -> torch.Tensor | None:
            g = self.groups[layer] if layer is not None and 0 <= layer < len(self.groups) else -1
            if g < 0:
                return None
            if g not in cache:
                if not code:
                    code.append(role_pair_code(roles))
                cache[g] = expand_table(self.tables[g], roles, dtype, code=code[0])
            return cache[g]

        return bias


def role_pair_code(roles: torch.Tensor) -> torch.Tensor:
    """``code[b, i, j] = roles[b, i] * 6 + roles[b, j]``: the (attending, attended) role pair of every
    entry."""
    return roles[:, :, None] * N_ROLES + roles[:, None, :]


def expand_table(
    table: torch.Tensor,
    roles: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    code: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gather a ``(heads|1, 6, 6)`` allowed-table into an additive ``(batch, heads|1, q, k)`` bias.

    Rows whose every real key is removed get their diagonal back (self-attention fallback).
    """
    table = table.to(roles.device).clone()
    table[:, int(Role.PAD), :] = True  # padding is the model's business, never the mask's
    table[:, :, int(Role.PAD)] = True
    h = table.shape[0]
    code = role_pair_code(roles) if code is None else code  # (b, q, k)
    allowed = table.reshape(h, -1)[:, code].transpose(0, 1)  # (b, h, q, k)
    # Which source roles of each row would see no real key: the table against the roles present.
    real = torch.zeros(roles.shape[0], N_ROLES, dtype=torch.bool, device=roles.device)
    real.scatter_(1, roles, True)
    real[:, int(Role.PAD)] = False
    empty_role = ~(table[None] & real[:, None, None, :]).any(-1)  # (b, h, 6)
    empty_role[:, :, int(Role.PAD)] = False
    if bool(empty_role.any()):
        idx = roles[:, None, :].expand(-1, h, -1)
        empty_tok = torch.gather(empty_role, 2, idx)  # (b, h, q)
        eye = torch.eye(roles.shape[1], dtype=torch.bool, device=roles.device)
        allowed = allowed | (empty_tok[..., None] & eye)
    return torch.zeros(allowed.shape, dtype=dtype, device=roles.device).masked_fill_(~allowed, float("-inf"))


def compile_mask(spec: MaskSpec, num_layers: int, num_heads: int) -> CompiledMask:
    """Resolve ``spec`` against a model with ``num_layers`` layers and ``num_heads`` heads; a spec made on a
    model of another shape (``spec.made_for``) is refused."""
    if spec.made_for is not None and spec.made_for != (num_layers, num_heads):
        raise BadInput(
            f"mask spec made for {_shape(spec.made_for)} does not fit this model "
            f"({_shape((num_layers, num_heads))}); make it on this model (ablations.search, "
            "ablations.export) or drop its 'made_for' to clamp its layer ranges"
        )
    per_head = any(r.heads.lower() != "all" for r in spec.rules)
    allowed = torch.ones(num_layers, num_heads if per_head else 1, N_ROLES, N_ROLES, dtype=torch.bool)
    notices: list[str] = []
    for rule, layers in zip(*_resolved(spec, num_layers, notices)):
        heads = (0,)
        if (
            per_head
        ):  # the layers' rule: an end past the last head is clamped (noted), a start past it refused
            heads, notice = resolve_ranges(rule.heads, num_heads, "heads")
            if notice:
                notices.append(notice)
        pairs = parse_interaction(rule.interaction).pairs
        for layer in layers:
            for head in heads:
                for s, t in pairs:
                    allowed[layer, head, s, t] = False
    return CompiledMask(spec, allowed, list(dict.fromkeys(notices)), num_layers, num_heads)


def compile_for(model, spec: MaskSpec) -> CompiledMask:
    """Compile ``spec`` for a model's number of layers and heads (anything with ``num_layers`` and
    ``num_heads``: a cross-encoder, a MICE model's view); the one way the tools compile a spec."""
    return compile_mask(spec, model.num_layers, model.num_heads)


def _resolved(spec: MaskSpec, num_layers: int, notices: list[str]):
    """Plain rules with their resolved layer indices; presets intersected with the rule's own layers."""
    rules, layer_sets = [], []
    for rule in spec.rules:
        own, notice = resolve_ranges(rule.layers, num_layers, "layers")
        if notice:
            notices.append(notice)
        sub = preset_rules(rule.interaction, num_layers)
        if sub is None:
            rules.append(rule)
            layer_sets.append(own)
            continue
        for p in sub:
            inner, notice = resolve_ranges(p.layers, num_layers, "layers")
            if notice:
                notices.append(f"{rule.interaction}: {notice}")
            rules.append(Rule(p.interaction, p.layers, rule.heads))
            layer_sets.append(tuple(i for i in inner if i in set(own)))
    return rules, layer_sets
