"""The terms `DistillationTrainer.compute_loss` adds up: the teacher's soft targets (one teacher, or the
mixture of several), and the soft-target, hidden-state and attention-map losses normalised over the
accumulation window."""

from __future__ import annotations

import inspect

import torch

from ..teacher_cache import TeacherCacheError
from .arguments import LossSettings
from .counts import ItemCounts
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES, soft_target_loss_for
from .teachers import align_logits, mix_teacher_logits, split_cached_logits


class DistillationLossTermsMixin:
    """Loss-term methods of `DistillationTrainer` (a `transformers.Trainer`)."""

    def _soft_target_logits(self, inputs: dict, teacher_out, cached_logits, settings: LossSettings):
        """The teacher logits of the soft targets; with several teachers, logits of their mixture at T.

        Each teacher's logits come from the cache when the batch has them, else from the live teachers
        (the feature teacher's forward is reused).
        """
        live_orders, cached_orders = self._label_orders  # each teacher's classes into the task's order
        if self._num_teachers == 1:
            if teacher_out is not None:
                return align_logits(teacher_out.logits, live_orders[0])
            return align_logits(cached_logits, cached_orders[0])
        if cached_logits is not None:
            per_teacher = split_cached_logits(cached_logits, self._num_teachers)
            orders = cached_orders
        else:
            feature = self.args.feature_teacher
            per_teacher = [
                teacher_out.logits if i == feature else self._run_teacher(inputs, {}, teacher).logits
                for i, teacher in enumerate(self.teachers)
            ]
            orders = live_orders
        per_teacher = [align_logits(z, order) for z, order in zip(per_teacher, orders, strict=True)]
        problem_type = self.accelerator.unwrap_model(self.model).config.problem_type
        if per_teacher[0].dim() == 3:  # token classification: one distribution per token
            problem_type = "single_label_classification"
        return mix_teacher_logits(per_teacher, self._teacher_weights, settings.temperature, problem_type)

    def _run_teacher(self, inputs: dict, requested: dict, teacher=None):
        teacher = teacher if teacher is not None else self.teacher_model
        if teacher is None:
            raise TeacherCacheError(
                "This batch has no cached teacher logits and the trainer has no teacher_model: attach the "
                "cache to every dataset you train or evaluate on, or pass teacher_model."
            )
        names = (
            self._teacher_input_names
            if teacher is self.teacher_model
            else set(inspect.signature(teacher.forward).parameters)
        )
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels" and k in names}
        with torch.no_grad(), self.accelerator.autocast():
            return teacher(**teacher_inputs, **requested)

    def _soft_loss(
        self,
        student_logits,
        teacher_logits,
        mask,
        counts: ItemCounts,
        settings: LossSettings,
        *,
        cached=False,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The soft-target loss over the accumulation window: per example, per soft target (cached rows), or
        for token logits (B, L, C) per word position (`labels` (B, L) != -100) or per real token (`mask`)."""
        problem_type = self.accelerator.unwrap_model(self.model).config.problem_type
        if student_logits.dim() == 3:  # token classification: one distribution per token
            problem_type, normalizer = "single_label_classification", "tokens"
            if self.args.token_soft_positions == "words":
                if labels is None:
                    raise ValueError(
                        "token_soft_positions='words' needs the labels (-100 off the words) in every batch; "
                        "use token_soft_positions='tokens' for unlabelled token data."
                    )
                # The positions that carry a word (its first subword, or every subword with
                # label_all_subwords): [CLS]/[SEP] and later subwords are not the task's predictions.
                mask, normalizer = labels.ne(-100), "labels"
        elif cached:  # rows a soft-label file did not cover hold NaN: they get the hard loss only
            mask, normalizer = torch.isfinite(teacher_logits).all(-1), "soft_targets"
            teacher_logits = teacher_logits.nan_to_num(0.0)
        else:
            mask, normalizer = None, "examples"
        loss_fn = soft_target_loss_for(problem_type)
        total = loss_fn(student_logits, teacher_logits, settings.temperature, mask, reduction="sum")
        return total / counts[normalizer]

    def _hidden_loss(self, student_out, teacher_out, mask, counts: ItemCounts) -> torch.Tensor:
        spec = HIDDEN_LOSSES.get(self.args.hidden_loss)
        hidden_states = student_out.hidden_states
        projected = hidden_states[self._student_layers + 1 :]  # appended by the projection hook, if any
        terms = []
        for index, (s, t) in enumerate(self.hidden_pairs):
            student_hidden = projected[index] if projected else hidden_states[s]
            terms.append(spec.fn(student_hidden, teacher_out.hidden_states[t], mask, reduction="sum"))
        return torch.stack(terms).mean() / counts[spec.normalizer]

    def _attention_loss(self, student_out, teacher_out, mask, counts: ItemCounts) -> torch.Tensor:
        spec = ATTENTION_LOSSES.get(self.args.attention_loss)
        terms = [
            spec.fn(student_out.attentions[s - 1], teacher_out.attentions[t - 1], mask, reduction="sum")
            for s, t in self.attention_pairs
        ]
        return torch.stack(terms).mean() / counts[spec.normalizer]
