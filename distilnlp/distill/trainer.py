"""`DistillationTrainer`: a `transformers.Trainer` whose loss also teaches the student from a frozen teacher."""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import PreTrainedModel, Trainer

from ..data.teacher_inputs import TEACHER_INPUT_KEYS, TeacherInputsCollator, pop_teacher_inputs
from ..runs.distributed import settle_gloo_workers_at_exit
from ..teacher_cache import CACHE_COLUMNS, TeacherCacheError, has_cached_logits, pop_cached_logits
from .arguments import DistillationTrainingArguments, LossSettings
from .augment import augment_window
from .counts import ItemCounts
from .loss_terms import DistillationLossTermsMixin
from .outputs import DistillationOutputsMixin
from .teachers import feature_teacher_of
from .trainer_setup import TrainerSetupMixin, check_model, checked_arguments


class NonFiniteLossError(FloatingPointError):
    """The distillation loss became NaN or infinite."""


class DistillationTrainer(TrainerSetupMixin, DistillationLossTermsMixin, DistillationOutputsMixin, Trainer):
    """`Trainer` for task-specific distillation of `model` (the student) from `teacher_model`.

    The loss is `alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + attention_weight * attention`
    (see `DistillationTrainingArguments`). Every component is normalised by its item count over the whole
    gradient-accumulation window and all processes, so accumulation and data parallelism give the same
    gradients as one large batch. The teacher is frozen, in eval mode, run under `torch.no_grad`, and never
    part of a checkpoint. When hidden widths differ, learned projections (one `nn.Linear` per mapped layer
    pair) are trained with the student, kept in checkpoints for resuming, and left out of `save_model`'s
    student (written to `distillation_projections.safetensors` beside it).

    Offline distillation: rows that carry cached teacher logits (`args.teacher_cache`, or datasets passed
    through `distilnlp.teacher_cache.attach_teacher_logits`) are taught from those; with hidden_weight =
    attention_weight = 0 the teacher is then never run, and `teacher_model` may be None. Rows labelled -100
    contribute the soft-target loss only. Temperature and weights follow `args`' schedules.

    `teacher_model` may be a list: the soft targets are then the weighted mean of the teachers'
    probabilities (`teacher_weights`), and feature losses come from `teachers[feature_teacher]`
    (`self.teacher_model`). With every teacher weight at 0 the teacher is never run (plain fine-tuning).
    `relation_weight` adds MiniLMv2 relation losses; `augmentation` augments each training window before
    the student and the teacher see it.

    Everything else is plain `Trainer`: `train(resume_from_checkpoint=...)`, `evaluate`, `push_to_hub`,
    callbacks, `accelerate launch`, and `hyperparameter_search` (with `model_init`; the student's
    projections and layer pairs are set up again for every trial's new student and settings).
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        teacher_model: PreTrainedModel | None = None,
        args: DistillationTrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        **kwargs,
    ):
        args = checked_arguments(args)
        if model is not None or model_init is None:
            check_model("model (the student)", model)
        collator = kwargs.get("data_collator")
        # Set when the teacher reads its own tokenization of the text (cross-tokenizer distillation).
        self.teacher_inputs = collator if isinstance(collator, TeacherInputsCollator) else None
        train_dataset, eval_dataset = self._attach_teacher_cache(
            args, teacher_model, processing_class, train_dataset, eval_dataset
        )
        teachers = self._set_teachers(teacher_model, args, train_dataset)
        if model is not None:
            self._setup_student(model, args)

        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            **kwargs,
        )
        # compute_loss normalises over the accumulation window itself (see get_batch_samples), so Trainer
        # must not divide the loss by the number of accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.teachers = [self._prepare_teacher(teacher) for teacher in teachers]
        self.teacher_model = feature_teacher_of(self.teachers, args.feature_teacher)
        self._window_counts: ItemCounts | None = None
        self._augmenter = self._make_augmenter(args, model)
        self._component_totals = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._component_steps = {"train": 0, "eval": 0}

    # ------------------------------------------------------------------------------------- student setup

    def call_model_init(self, trial=None):
        model = super().call_model_init(trial)
        self._setup_student(model, self.args)
        return model

    def _hp_search_setup(self, trial):
        super()._hp_search_setup(trial)
        if trial is not None:  # the trial's values were set on args without __post_init__'s checks
            self.args.validate_distillation()

    # ------------------------------------------------------------------------------------- teacher cache

    def _set_signature_columns_if_needed(self):
        # Keep the cache columns (and the raw text a TeacherInputsCollator tokenizes for the teacher), which
        # the student's forward does not take: compute_loss pops them.
        super()._set_signature_columns_if_needed()
        extra = [*CACHE_COLUMNS, *([self.teacher_inputs.text_column] if self.teacher_inputs else [])]
        self._signature_columns += [c for c in extra if c not in self._signature_columns]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not all(inputs.get(k) is not None for k in self.label_names):
            # Without labels Trainer calls the model directly, which does not take the cache columns.
            inputs = {k: v for k, v in inputs.items() if k not in CACHE_COLUMNS + TEACHER_INPUT_KEYS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # ----------------------------------------------------------------------------------------------- loss

    def loss_settings(self) -> LossSettings:
        """Temperature and weights at the current step (progress = global_step / max_steps)."""
        max_steps = self.state.max_steps
        return self.args.loss_settings(self.state.global_step / max_steps if max_steps > 0 else 0.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        settings = self.loss_settings()
        inputs = dict(inputs)
        counts, scale = self._counts(model, inputs)  # before the pops: counts rows with cached soft targets
        num_labels = self.accelerator.unwrap_model(model).config.num_labels
        cached_logits = pop_cached_logits(inputs, num_labels)  # (B, C), or None without a cache
        teacher_inputs = pop_teacher_inputs(inputs)  # the teacher's own tokenization, or None (shared ids)
        requested = {}
        if self.hidden_pairs:
            requested["output_hidden_states"] = True
        if self.attention_pairs:
            requested["output_attentions"] = True

        student_out = model(**inputs, **requested)
        teacher_out = None
        uses_teacher = self.args.uses_teacher  # False: plain fine-tuning, the teacher is never run
        teacher_side = teacher_inputs or inputs  # the teacher's own tokenization when it differs
        if uses_teacher and (cached_logits is None or requested or self.relations is not None):
            # Hidden states / attention maps / Q, K, V only come from a live teacher.
            teacher_out = self._run_teacher(teacher_side, requested)
        teacher_logits = (
            self._soft_target_logits(teacher_side, teacher_out, cached_logits, settings)
            if uses_teacher
            else None
        )

        mask = inputs.get("attention_mask")
        components = {}
        if uses_teacher:
            # Soft targets read from a cache may hold NaN rows (a soft-label file that did not cover them).
            cached = cached_logits is not None and (teacher_out is None or self._num_teachers > 1)
            components["soft"] = self._soft_loss(
                student_out.logits,
                teacher_logits,
                mask,
                counts,
                settings,
                cached=cached,
                labels=inputs.get("labels"),
            )
        labels = inputs.get("labels")
        if labels is not None and student_out.get("loss") is not None:
            # The model's own loss is a mean over its label entries; re-weight it to the window's count. A
            # micro-batch of unlabelled rows (all -100) has a NaN mean (0 / 0): it contributes exactly 0.
            labelled = labels.ne(-100).sum()
            hard = torch.where(labelled > 0, student_out.loss, torch.zeros_like(student_out.loss))
            components["hard"] = hard * labelled / counts["labels"]
        if self.hidden_pairs:
            components["hidden"] = self._hidden_loss(student_out, teacher_out, mask, counts)
        if self.attention_pairs:
            components["attention"] = self._attention_loss(student_out, teacher_out, mask, counts)
        if self.relations is not None:
            components["relation"] = self.relations.loss(mask, counts)

        weights = {
            "soft": settings.alpha,
            "hard": 1 - settings.alpha,
            "hidden": settings.hidden_weight,
            "attention": settings.attention_weight,
            "relation": settings.relation_weight,
        }
        # DDP averages gradients over processes; counts are global, so undo that average.
        components = {name: value * scale for name, value in components.items()}
        loss = sum(weights[name] * value for name, value in components.items())
        if not torch.isfinite(loss.detach()):
            detail = ", ".join(f"{name}={value.item():.4g}" for name, value in components.items())
            raise NonFiniteLossError(
                f"The distillation loss is not finite at step {self.state.global_step} ({detail}). Lower the "
                "learning rate, use bf16 instead of fp16, or check the batch for empty or corrupted inputs."
            )
        self._record_components(components, "train" if model.training else "eval")

        if return_outputs:
            # Only loss and logits: hidden states / attentions would be concatenated by the eval loop.
            return loss, type(student_out)(loss=loss, logits=student_out.logits)
        return loss

    # ------------------------------------------------------------------- accumulation-window item counts

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count examples / tokens / labels over the whole window and all processes."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples and self.args.augmentation != "none":
            # Augmented before counting, so the window's counts are those of the inputs the models see.
            batch_samples = self._augment(batch_samples)
        if batch_samples:
            local = ItemCounts.total(batch_samples).as_tensor().to(device)
            self._window_counts = ItemCounts.from_tensor(self.accelerator.gather(local[None]).sum(0))
            self._component_steps["train"] += 1
            if num_items_in_batch is None:
                # Non-None tells training_step that compute_loss already accounts for accumulation.
                num_items_in_batch = self._window_counts.examples
        return batch_samples, num_items_in_batch

    def _augment(self, batches: list[dict]) -> list[dict]:
        """The window's micro-batches, augmented (the student and the teacher then both see these)."""
        if any(has_cached_logits(batch) for batch in batches):
            raise TeacherCacheError(
                "augmentation cannot use cached teacher logits (they are of the original inputs): train "
                "without them, so the live teacher sees the augmented inputs."
            )
        step, process = self.state.global_step, self.args.process_index
        return augment_window(batches, self._augmenter, self.args.seed, step, process)

    def _counts(self, model, inputs) -> tuple[ItemCounts, int]:
        """Normalising counts and the DDP correction factor for this micro-batch."""
        if model.training and self._window_counts is not None:
            return self._window_counts, self.accelerator.num_processes
        return ItemCounts.of_batch(inputs), 1

    def train(self, *args, **kwargs):
        settle_gloo_workers_at_exit()  # no SIGABRT at exit after a gloo run (see `distilnlp.runs.distributed`)
        try:
            return super().train(*args, **kwargs)
        finally:
            self._window_counts = None
