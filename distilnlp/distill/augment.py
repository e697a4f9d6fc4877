"""Consistent augmentation (function matching, Beyer et al. 2022): the student and the teacher see the SAME
augmented input, so the student learns the teacher's function around each example, not a fixed label.

The trainer augments every micro-batch of an accumulation window before counting its items, then runs the
student and the teacher on it. Every row draws from its own generator, seeded by (seed, global step, row
index in the step's global batch), so a row's augmentation does not depend on how the window is cut into
micro-batches or padded: accumulation gives exactly the gradients of one large batch, and so do 2 processes
with one micro-batch each (`mix`, which pairs rows of one micro-batch, excepted). Special tokens and padding are never changed; rows stay right-padded.

Kinds (`augmentation_prob` = p):
- `token_dropout`: each non-special token is deleted with probability p.
- `mask`: each non-special token is replaced by the tokenizer's mask token with probability p.
- `span_delete`: one contiguous span of round(p * n) of the n non-special tokens is deleted.
- `mix`: with probability p a row keeps its first part (a fraction u ~ U(0.25, 0.75) of its non-special
  tokens) followed by the last part of another row's (from the same fraction on). Mixed rows have no hard
  label (-100): they are taught by the teacher alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

AUGMENTATIONS = ("none", "token_dropout", "mask", "span_delete", "mix")
# Per-token columns carried along when tokens move, with the value of a padding position.
_TOKEN_COLUMNS = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "position_ids": 0,
    "labels": -100,
}


@dataclass(frozen=True)
class Augmenter:
    """How to augment: the kind, p, and the tokenizer facts it needs.

    special_ids: token ids never changed (the tokenizer's special tokens); None = treat the first and the
    last real token of each row as special ([CLS] ... [SEP]).
    """

    kind: str
    prob: float
    pad_token_id: int = 0
    special_ids: frozenset[int] | None = None
    mask_token_id: int | None = None

    def __post_init__(self):
        if self.kind not in AUGMENTATIONS or self.kind == "none":
            raise ValueError(
                f"augmentation must be one of {', '.join(AUGMENTATIONS[1:])}, got {self.kind!r}."
            )
        if self.kind == "mask" and self.mask_token_id is None:
            raise ValueError(
                "augmentation='mask' needs a mask token: pass the tokenizer as processing_class (one with a "
                "mask token), or choose token_dropout / span_delete / mix."
            )

    @classmethod
    def from_tokenizer(cls, kind: str, prob: float, tokenizer, pad_token_id: int | None) -> Augmenter:
        """Special, mask and padding ids from `tokenizer` (None: first/last token special, pad id given)."""
        if tokenizer is None or not hasattr(tokenizer, "all_special_ids"):
            return cls(kind, prob, pad_token_id or 0)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (pad_token_id or 0)
        return cls(kind, prob, pad, frozenset(tokenizer.all_special_ids), tokenizer.mask_token_id)


def row_seed(seed: int, step: int, row: int) -> int:
    """A 63-bit seed for one row of one optimizer step's global batch."""
    return int(np.random.SeedSequence([seed, step, row]).generate_state(2, np.uint64)[0] >> 1)


def _content(ids: list[int], real: list[int], special_ids: frozenset[int] | None) -> list[int]:
    """The real positions of a row that hold no special token (the ones augmentation may change)."""
    if special_ids is None:
        return real[1:-1]
    return [p for p in real if ids[p] not in special_ids]


def _plan_row(ids: list[int], real: list[int], augmenter: Augmenter, g: torch.Generator):
    """Positions to keep (in order) and positions to mask, for one row; `real` are its real positions."""
    content = _content(ids, real, augmenter.special_ids)
    if augmenter.kind == "token_dropout":
        drop = torch.rand(len(content), generator=g) < augmenter.prob
        dropped = {p for p, d in zip(content, drop.tolist(), strict=True) if d}
        return [p for p in real if p not in dropped], []
    if augmenter.kind == "mask":
        hit = torch.rand(len(content), generator=g) < augmenter.prob
        return real, [p for p, h in zip(content, hit.tolist(), strict=True) if h]
    # span_delete
    length = round(augmenter.prob * len(content))
    if length == 0:
        return real, []
    start = int(torch.randint(0, len(content) - length + 1, (), generator=g))
    deleted = set(content[start : start + length])
    return [p for p in real if p not in deleted], []


def _plan_mix(rows: list, b: int, g: torch.Generator, prob: float, width: int):
    """(source row, position) pairs of row b mixed with another row, or None when b is not mixed.

    `rows[i]` = (real positions, non-special positions) of row i.
    """
    if len(rows) < 2 or float(torch.rand((), generator=g)) >= prob:
        return None
    other = (b + int(torch.randint(1, len(rows), (), generator=g))) % len(rows)
    fraction = 0.25 + 0.5 * float(torch.rand((), generator=g))
    (real, content), (_, other_content) = rows[b], rows[other]
    if not content or not other_content:
        return None
    cut, other_cut = round(fraction * len(content)), round(fraction * len(other_content))
    boundary = content[cut] if cut < len(content) else content[-1] + 1
    head = [(b, p) for p in real if p < boundary]  # leading special tokens + the first `cut` tokens
    tail = [(b, p) for p in real if p > content[-1]]  # trailing special tokens
    middle = [(other, p) for p in other_content[other_cut:]][: max(0, width - len(head) - len(tail))]
    return head + middle + tail


def augment_batch(batch: dict, augmenter: Augmenter, seeds: list[int]) -> dict:
    """A new batch: each row augmented with the generator seeded by `seeds[row]`.

    Args:
        batch: collated tensors; `input_ids` (B, L), `attention_mask` (B, L) (optional), and any other
            per-token column (`token_type_ids`, token-level `labels`, ...) move with their tokens.
        seeds: B seeds, one per row.

    Returns:
        The batch with its per-token columns rebuilt (right-padded to the longest row, never wider than L)
        and, for `mix`, labels -100 on mixed rows; other entries unchanged.
    """
    ids = batch["input_ids"]
    width = ids.shape[1]
    mask = batch.get("attention_mask")
    ids_list = ids.tolist()
    mask_list = mask.tolist() if mask is not None else [[1] * width for _ in ids_list]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    real = [[p for p in range(width) if m[p]] for m in mask_list]
    plans, masked, mixed = [], [], []
    if augmenter.kind == "mix":
        rows = [
            (positions, _content(row, positions, augmenter.special_ids))
            for row, positions in zip(ids_list, real, strict=True)
        ]
        for b in range(len(ids_list)):
            plan = _plan_mix(rows, b, generators[b], augmenter.prob, width)
            mixed.append(plan is not None)
            plans.append(plan if plan is not None else [(b, p) for p in real[b]])
            masked.append([])
    else:
        for b, (row, positions) in enumerate(zip(ids_list, real, strict=True)):
            keep, hit = _plan_row(row, positions, augmenter, generators[b])
            plans.append([(b, p) for p in keep])
            masked.append(hit)
    length = max(len(plan) for plan in plans)
    out = dict(batch)
    token_level_labels = (
        "labels" in batch and batch["labels"].shape == ids.shape and not batch["labels"].is_floating_point()
    )
    for column, pad in _TOKEN_COLUMNS.items():
        if column not in batch or (column == "labels" and not token_level_labels):
            continue
        source = batch[column]
        fill = augmenter.pad_token_id if column == "input_ids" else pad
        new = source.new_full((len(plans), length), fill)
        for b, plan in enumerate(plans):
            if plan:
                rows = torch.tensor([r for r, _ in plan], device=source.device)
                cols = torch.tensor([p for _, p in plan], device=source.device)
                new[b, : len(plan)] = source[rows, cols]
        out[column] = new
    if mask is None:
        out["attention_mask"] = torch.zeros_like(out["input_ids"])
        for b, plan in enumerate(plans):
            out["attention_mask"][b, : len(plan)] = 1
    if augmenter.kind == "mask":
        for b, (plan, hit) in enumerate(zip(plans, masked, strict=True)):
            hits = set(hit)
            for index, (_, p) in enumerate(plan):
                if p in hits:
                    out["input_ids"][b, index] = augmenter.mask_token_id
    if any(mixed) and "labels" in batch:
        if batch["labels"].is_floating_point():
            raise ValueError(
                "augmentation='mix' gives mixed rows no hard label (-100), which needs integer class labels; "
                "for regression or multi-label tasks choose token_dropout, mask or span_delete."
            )
        rows = torch.tensor(mixed, device=out["labels"].device)
        labels = out["labels"].clone()
        labels[rows] = -100
        out["labels"] = labels
    return out


def augment_window(
    batches: list[dict], augmenter: Augmenter, seed: int, step: int, process: int
) -> list[dict]:
    """Augment the micro-batches of one accumulation window on one process.

    Rows are numbered across the window, after the rows of the processes before this one (process *
    rows here), so with one micro-batch per step a 2-process run augments each row as a 1-process run with
    the same global batch does (accelerate gives each process a contiguous slice of the global batch).
    """
    total = sum(len(batch["input_ids"]) for batch in batches)
    out, row = [], process * total
    for batch in batches:
        count = len(batch["input_ids"])
        out.append(augment_batch(batch, augmenter, [row_seed(seed, step, row + i) for i in range(count)]))
        row += count
    return out
