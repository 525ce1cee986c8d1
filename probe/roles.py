"""Token roles of a cross-encoder input ``[CLS] query [SEP] document [SEP] [PAD]*``.

Every token gets exactly one role. Roles are derived, as in the MICE authors' code, from a cumulative
sum over the separator positions, so they work for any tokenizer that wraps a pair as ``cls A sep B sep``
or ``cls A sep sep B sep`` (RoBERTa); ``token_type_ids`` are not needed.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Role(IntEnum):
    CLS = 0
    QUERY = 1
    SEP1 = 2
    DOC = 3
    SEP2 = 4
    PAD = 5

    @property
    def label(self) -> str:
        return self.name.lower()


#: Role names in code order; ``ROLE_NAMES[Role.DOC] == "doc"``.
ROLE_NAMES: tuple[str, ...] = tuple(r.label for r in Role)
#: Number of role codes, padding included (6): the side of a role×role table, the base of a role-pair code.
N_ROLES: int = len(Role)
#: Roles of real (non-padding) tokens.
TOKEN_ROLES: tuple[Role, ...] = (Role.CLS, Role.QUERY, Role.SEP1, Role.DOC, Role.SEP2)
#: Names of the real-token roles, in code order: the sources and targets of a flow (padding excluded).
FLOW_ROLES: tuple[str, ...] = tuple(ROLE_NAMES[r] for r in TOKEN_ROLES)
#: Number of real-token roles (5): the side of a flow table, the width of a per-role summary.
N_FLOW_ROLES: int = len(FLOW_ROLES)


def parse_role(name: str) -> Role:
    try:
        return Role[name.upper()]
    except KeyError:
        raise ValueError(f"unknown role {name!r}; expected one of {', '.join(ROLE_NAMES)}") from None


def token_roles(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int, middle: int = 1
) -> torch.Tensor:
    """Role code of every token, shape ``(batch, seq)``, dtype long.

    Position 0 is CLS; the first ``middle`` separators are SEP1 (one ``[SEP]`` for BERT-style tokenizers,
    ``</s></s>`` for RoBERTa-style ones: :func:`probe.families.pair_template`), the last one SEP2; tokens
    before SEP1 are the query, tokens between the separators the document; masked positions are PAD. A row
    without ``middle + 1`` separators is malformed and raises.
    """
    import torch  # here, so that the role vocabulary imports without torch (fast command-line checks)

    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    real = attention_mask.bool()
    is_sep = (input_ids == sep_token_id) & real
    is_sep[:, 0] = False  # position 0 is CLS (RoBERTa's <s> differs from </s>, BERT's [CLS] from [SEP])
    n_sep = is_sep.sum(dim=1)
    if bool((n_sep != middle + 1).any()):
        bad = int((n_sep != middle + 1).nonzero()[0, 0])
        template = "[CLS] query [SEP] document [SEP]" if middle == 1 else "<s> query </s></s> document </s>"
        raise ValueError(
            f"row {bad} has {int(n_sep[bad])} separator tokens; a cross-encoder pair needs exactly "
            f"{middle + 1} ({template})"
        )
    # seps_before[i] = number of separators strictly before position i
    seps_before = torch.cumsum(is_sep.long(), dim=1) - is_sep.long()
    roles = torch.full_like(input_ids, int(Role.PAD))
    roles[real & (seps_before == 0)] = int(Role.QUERY)
    roles[real & (seps_before == middle)] = int(Role.DOC)
    roles[is_sep & (seps_before < middle)] = int(Role.SEP1)
    roles[is_sep & (seps_before == middle)] = int(Role.SEP2)
    roles[:, 0] = torch.where(real[:, 0], int(Role.CLS), int(Role.PAD))
    return roles
