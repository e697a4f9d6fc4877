"""Relation distillation (MiniLMv2) in the trainer: Q/K/V kept by forward hooks, compared per layer pair.

Relation losses (MiniLMv2) compare Q-Q, K-K and V-V relations, which need the projections' outputs; models
return neither, so forward hooks on the `query` / `key` / `value` linear layers keep them for one forward.
The hooks keep the tensors in the autograd graph: a student's relation loss trains its Q/K/V projections.
"""

from __future__ import annotations

import math
import re
from functools import partial

import torch
from torch import nn

from .counts import ItemCounts
from .losses import RELATION_LOSSES

RELATION_TYPES = ("q", "k", "v")
# <...>.layer.<i>.attention.self.query (BERT, RoBERTa, ELECTRA, XLM-R), .query_proj (DeBERTa-v2),
# <...>.layer.<i>.attention.q_lin (DistilBERT), <...>.layer.<i>.attention.attn.q (MPNet); i is the 0-based
# encoder layer.
_PROJECTION = re.compile(
    r"(?:^|\.)layer\.(\d+)\.attention\.(?:self\.(query|key|value)(?:_proj)?|([qkv])_lin|attn\.([qkv]))$"
)
KNOWN_NAMES = (
    "BERT/RoBERTa/ELECTRA/XLM-R `attention.self.query|key|value`, DeBERTa-v2 "
    "`attention.self.query_proj|key_proj|value_proj`, DistilBERT `attention.q_lin|k_lin|v_lin`, MPNet "
    "`attention.attn.q|k|v`"
)


def find_qkv_modules(model: nn.Module, role: str = "model") -> dict[int, dict[str, nn.Linear]]:
    """{1-based layer: {"q": query linear, "k": key linear, "v": value linear}} of a BERT-class model."""
    found: dict[int, dict[str, nn.Linear]] = {}
    for name, module in model.named_modules():
        match = _PROJECTION.search(name)
        if match and isinstance(module, nn.Linear):
            kind = (match.group(2) or match.group(3) or match.group(4))[0]
            found.setdefault(int(match.group(1)) + 1, {})[kind] = module
    if not found or any(len(kinds) != 3 for kinds in found.values()):
        raise ValueError(
            f"relation_weight > 0 needs the {role}'s attention query/key/value linear layers, which "
            f"{type(model).__name__} does not have under a known name ({KNOWN_NAMES}). Set relation_weight=0."
        )
    return found


class RelationCapture:
    """Keeps `(layer, kind) -> (B, L, H)` outputs of the chosen layers' Q/K/V projections during a forward."""

    def __init__(
        self, model: nn.Module, layers: tuple[int, ...], kinds: tuple[str, ...], role: str = "model"
    ):
        modules = find_qkv_modules(model, role)
        missing = [layer for layer in layers if layer not in modules]
        if missing:
            raise ValueError(
                f"relation_layers names {role} layer(s) {missing}, but the {role} has layers 1..{max(modules)}."
            )
        self.widths = {modules[layer][kind].out_features for layer in layers for kind in kinds}
        self.outputs: dict[tuple[int, str], torch.Tensor] = {}
        self._handles = [
            modules[layer][kind].register_forward_hook(partial(self._keep, (layer, kind)))
            for layer in layers
            for kind in kinds
        ]

    def _keep(self, key: tuple[int, str], module, args, output) -> None:
        self.outputs[key] = output

    def pop(self) -> dict[tuple[int, str], torch.Tensor]:
        """The outputs of the last forward (emptied, so no stale tensor is kept alive or read twice)."""
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self.outputs = [], {}


class RelationDistillation:
    """Hooks on the student's and the teacher's mapped layers, and the relation loss between them.

    `args` gives `relation_layers` (pairs; the embedding pair of 'uniform' is dropped), `relation_types`
    and `relation_heads` (default: the student's attention-head count), which must divide every width.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, args):
        s_layers, t_layers = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        try:
            pairs = args.parsed_relation_layers.resolve(s_layers, t_layers)
        except ValueError as error:  # the mapping's messages name layer_mapping
            raise ValueError(str(error).replace("layer_mapping", "relation_layers")) from None
        self.pairs = tuple((s, t) for s, t in pairs if s > 0 and t > 0)
        self.kinds = args.parsed_relation_types
        self.heads = args.relation_heads or student.config.num_attention_heads
        self.student = RelationCapture(student, tuple(s for s, _ in self.pairs), self.kinds, "student")
        self.teacher = RelationCapture(teacher, tuple(t for _, t in self.pairs), self.kinds, "teacher")
        widths = sorted(self.student.widths | self.teacher.widths)
        if any(width % self.heads for width in widths):
            self.remove()
            raise ValueError(
                f"relation_heads={self.heads} must divide the query/key/value widths of the student and the "
                f"teacher ({widths}); set relation_heads to a common divisor such as {math.gcd(*widths)}."
            )

    def loss(self, attention_mask: torch.Tensor | None, counts: ItemCounts) -> torch.Tensor:
        """Mean over layer pairs and relation types of the KL summed over real query rows, / window tokens."""
        spec = RELATION_LOSSES.get("kl")
        student, teacher = self.student.pop(), self.teacher.pop()
        terms = [
            spec.fn(student[(s, kind)], teacher[(t, kind)], attention_mask, self.heads, reduction="sum")
            for s, t in self.pairs
            for kind in self.kinds
        ]
        return torch.stack(terms).mean() / counts[spec.normalizer]

    def remove(self) -> None:
        self.student.remove()
        self.teacher.remove()
