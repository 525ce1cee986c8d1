"""Pair view: one query and one document through a model (full, or with a MICE mask).

Answers: what does the model score this pair, where does each token look in a chosen layer and head, and
which tokens does the score depend on (captum Integrated Gradients)?
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ablations.masking.interactions import MASK_PRESETS, default_mice_k
from ablations.masking.masks import MaskSpec, Rule, compile_mask
from ablations.scorers import model_depth
from app import charts, data
from app.views.common import Context, check_pair, guard, pair_inputs, pick_pair
from probe.ranges import format_ranges

FULL, PRESET, FILE = "full cross-encoder", "MICE preset", "mask spec / MICE configuration file"


def render(ctx: Context) -> None:
    st.header("Pair: score, attention, attributions")
    st.caption(
        "What does the model score this pair, where does each token look in a chosen layer and head, "
        "and which tokens does the score depend on?"
    )
    with guard("Collection"):
        pick_pair(ctx)
    query, doc = pair_inputs("pair")
    variant = choose_variant(ctx)
    loaded = ctx.load_model(variant.model if variant is not None else None)
    if loaded is None or not check_pair(query, doc):
        return
    ce, path, key = loaded
    spec_json = variant.spec_json if variant is not None else None
    with guard("Scoring"):
        if spec_json is not None:
            compiled = compile_mask(MaskSpec.from_json(spec_json), ce.num_layers, ce.num_heads)
            for notice in (*compiled.notices, *variant.notes):
                st.caption(notice)
            text = compiled.describe()
            if len(text) > 240:  # a MICE configuration: one long rule per layer
                text = f"{len(compiled.spec.rules)} rules → layers {format_ranges(compiled.masked_layers)}"
            st.caption(f"Mask: {text}")
            with st.expander("Mask spec"):
                st.json(compiled.spec.to_dict())
        with st.spinner("Scoring …"):
            # the full model's score comes from the same cached forward that captures its attention (one
            # forward for a new pair when no variant is chosen)
            full = (
                data.pair_patterns(ce, key, None, query, doc).score
                if spec_json is None and not isinstance(ce, data.MiceCrossEncoder)
                else data.pair_score(ce, key, None, query, doc)
            )
            other = None
            if variant is not None and variant.mice_json:
                other = data.mice_score(ce, key, variant.mice_json, query, doc)
            elif spec_json is not None:
                other = data.pair_score(ce, key, spec_json, query, doc)
        cols = st.columns(3)
        cols[0].metric(f"Score ({data.model_label(ce)})", f"{full:.4f}")
        if other is not None:
            name = "MICE" if variant.mice_json else "masked"
            cols[1].metric(f"Score ({name})", f"{other:.4f}", delta=f"{other - full:+.4f}")
        kind = f" · {ce.describe()}" if isinstance(ce, data.MiceCrossEncoder) else ""
        cols[2].caption(
            f"model `{path}` · {ce.num_layers} layers × {ce.num_heads} heads · max length "
            f"{ce.max_length}{kind}"
        )
    with guard("Attention"):
        attention_section(ce, key, spec_json, query, doc)
    with guard("Attributions"):
        attribution_section(ce, key, spec_json, query, doc)


# --------------------------------------------------------------------------------------- picking
def _shown(path: Path) -> str:
    """A found file as the picker shows it: relative to the working folder when under it."""
    cwd = Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def choose_variant(ctx: Context) -> data.Variant | None:
    """``None`` for the full model (also while no usable file is chosen: a message says why, and the
    score and attention sections stay, with the layer and head the reader chose), or a
    :class:`~app.data.Variant`."""
    variant = st.radio("Scorer", (FULL, PRESET, FILE), horizontal=True, key="pair_variant")
    if variant == FULL:
        return None
    if variant == PRESET:
        c1, c2 = st.columns(2)
        preset = c1.selectbox("Preset", MASK_PRESETS, index=len(MASK_PRESETS) - 1, key="pair_preset")
        if preset == "mice-step3":
            k = c2.number_input(
                "K: query–document interaction starts at layer",
                0,
                48,
                default_mice_k(model_depth(ctx.model or None)),
                key="pair_k",
                help="default: a third of the model's depth (12 layers: 4, the paper's MICE-ℓ4+3; 6: 2)",
            )
            preset = f"mice-step3@{int(k)}"
        return data.Variant(preset, MaskSpec([Rule(preset)]).to_json())
    found = data.spec_files(*data.working_folders(ctx.results))
    files = [_shown(p) for p in found]
    c1, c2 = st.columns(2)
    chosen = c1.selectbox(
        f"Files found under {ctx.results} and the working folder ({len(files)})",
        [*files, "(type a path)"],
        key="pair_spec_pick",
    )
    typed = c2.text_input("…or a JSON file path", key="pair_spec_path")
    path = typed.strip() or (chosen if chosen != "(type a path)" else "")
    if not path:
        st.info(
            "Choose or type a JSON file: a MICE configuration (`mice.json`), a mask spec (`--spec` file) "
            "or the `search.json` of `python -m ablations.search` (its removed set). Until then the full "
            "model is shown."
        )
        return None
    try:
        variant = data.variant_from_file(path)
    except Exception as exc:  # noqa: BLE001
        st.error(f"Cannot use {path!r}: {data.message(exc)}; the full model is shown.", icon="⚠️")
        return None
    st.caption(
        f"`{Path(path).name}`: {variant.label}" + (f" · model `{variant.model}`" if variant.model else "")
    )
    return variant


# ------------------------------------------------------------------------------------- attention
def attention_section(ce, key: str, spec_json: str | None, query: str, doc: str) -> None:
    st.subheader("Attention")
    c1, c2, c3 = st.columns(3)
    layer = c1.selectbox("Layer", list(range(ce.num_layers)), key="pair_layer")
    head = c2.selectbox(
        "Head",
        ["mean", *range(ce.num_heads)],
        key="pair_head",
        format_func=lambda h: "mean over heads" if h == "mean" else f"head {h}",
    )
    with st.spinner("Capturing every layer's attention (one forward) …", show_time=True):
        patterns = data.pair_patterns(ce, key, spec_json, query, doc)
    att = data.PairAttention(patterns.tokens, patterns.roles, patterns.patterns[int(layer)], patterns.score)
    matrix = att.pattern.mean(axis=0) if head == "mean" else att.pattern[int(head)]
    labels = [charts.token_label(i, t, r) for i, (t, r) in enumerate(zip(att.tokens, att.roles))]
    source = c3.selectbox(
        "Attention from token",
        list(range(len(att.tokens))),
        key="pair_source",
        format_func=lambda i: labels[i],
    )
    head_txt = "mean over heads" if head == "mean" else f"head {head}"
    st.html(charts.role_legend())
    st.html(
        charts.token_strip(
            att.tokens,
            att.roles,
            matrix[source],
            caption=f"shade = attention paid by token {labels[source]!r} (layer {layer}, "
            f"{head_txt}); hover a token for its value",
        )
    )
    st.altair_chart(
        charts.head_view(att.tokens, att.roles, att.pattern[:, source, :], repr(labels[source])),
        key="pair_head_view",
    )
    st.caption(
        f"Head view: token {labels[source]!r}'s attention in each of the {att.pattern.shape[0]} heads of "
        f"layer {layer} (rows = heads); hover a cell, scroll to zoom along the tokens."
    )
    crop = st.radio(
        "Heatmap rows × columns",
        list(charts.CROPS),
        horizontal=True,
        key="pair_crop",
        help="rows attend to columns; crop to, e.g., query rows × document columns",
    )
    rows, cols = charts.crop_positions(att.roles, crop)
    if not rows or not cols:
        st.info(f"This pair has no tokens for {crop!r}.")
    else:
        st.altair_chart(
            charts.attention_heatmap(
                att.tokens, att.roles, matrix, f"layer {layer}, {head_txt}: rows attend to columns", crop=crop
            ),
            key="pair_heatmap",
        )
        st.caption(
            f"{len(rows)} × {len(cols)} tokens · hover a cell for both tokens and the weight · scroll to "
            "zoom, drag to pan, double-click to reset · every layer captured in one forward "
            f"({patterns.seconds:.2f} s), so layer and head changes only re-slice"
        )
    table = pd.DataFrame(
        {
            "position": range(len(att.tokens)),
            "token": att.tokens,
            "role": att.roles,
            "attention_from_source": matrix[source],
            "attention_received": matrix.mean(axis=0),
        }
    )
    with st.expander("Attention per token (table)"):
        st.dataframe(table, hide_index=True, key="pair_attention_df")


def attribution_section(ce, key: str, spec_json: str | None, query: str, doc: str) -> None:
    st.subheader("Attributions (captum Integrated Gradients)")
    c1, c2 = st.columns([1, 2])
    on = c1.toggle("Compute attributions", value=True, key="pair_ig")
    steps = c2.slider("Integration steps", 4, 128, 32, step=4, key="pair_ig_steps")
    if not on:
        st.caption("Attributions are off.")
        return
    with st.spinner(f"Integrated Gradients ({steps} steps) …", show_time=True):
        tokens, roles = data.pair_attributions(ce, key, spec_json, query, doc, int(steps))
    delta = float(roles["delta"].iloc[0])
    st.caption(
        f"Baseline: query and document tokens replaced by [PAD] (CLS/SEP kept, so they get 0). "
        "Attributions sum to score − baseline score = "
        f"{roles['score'].iloc[0] - roles['baseline_score'].iloc[0]:+.4f}"
        f" up to the convergence delta {delta:+.2e}."
    )
    st.html(
        charts.token_strip(
            tokens["token"].tolist(),
            tokens["role"].tolist(),
            tokens["attribution"].to_numpy(),
            signed=True,
            caption="orange raises the score, purple lowers it (role colours only underline)",
        )
    )
    st.altair_chart(charts.attribution_bars(tokens))
    st.dataframe(roles[["role", "attribution", "abs_share", "tokens"]], hide_index=True, key="pair_roles_df")
