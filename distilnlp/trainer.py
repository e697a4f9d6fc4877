"""`DistillationTrainer`: a `transformers.Trainer` whose loss also teaches the student from a frozen teacher."""

from __future__ import annotations

import inspect
import logging
import os
from collections import defaultdict

import safetensors.torch
import torch
from transformers import PreTrainedModel, Trainer

from .counts import ItemCounts
from .layers import (
    PROJECTIONS_FILE,
    attach_projections,
    check_compatible,
    install_projection_hook,
    split_projection_state,
)
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES, soft_target_loss_for
from .model_card import distillation_summary, render_model_card
from .quantization_aware import make_quantization_aware
from .student import disable_attention_probs_dropout
from .teacher_cache import (
    CACHE_COLUMNS,
    LOGITS,
    TeacherCacheError,
    attach_teacher_cache,
    has_cached_logits,
    pop_cached_logits,
)
from .training_args import DistillationTrainingArguments, LossSettings

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The distillation loss became NaN or infinite."""


def _check_model(role: str, candidate, hint: bool = False) -> None:
    if not isinstance(candidate, PreTrainedModel):
        extra = " (to train without a teacher, use cached teacher logits: set teacher_cache)" if hint else ""
        raise TypeError(
            f"{role} must be a transformers PreTrainedModel, got {type(candidate).__name__}{extra}."
        )


def _cached_width(dataset) -> int | None:
    """Logits per example of a dataset with a full `teacher_logits` column (None for top-k columns)."""
    feature = getattr(dataset, "features", {}).get(LOGITS)
    length = getattr(feature, "length", -1)
    return length if length and length > 0 else None


class DistillationTrainer(Trainer):
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
        if args is None:
            args = DistillationTrainingArguments(output_dir="distilnlp-output")
        if not isinstance(args, DistillationTrainingArguments):
            raise TypeError(
                f"DistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}. Build them "
                "with the same fields plus the distillation ones: DistillationTrainingArguments(output_dir=...)."
            )
        if model is not None or model_init is None:
            _check_model("model (the student)", model)
        self.teacher_cache_info: dict | None = None  # the cache's metadata, when one is used
        if args.teacher_cache:
            train_dataset, eval_dataset, self.teacher_cache_info = attach_teacher_cache(
                args, teacher_model, processing_class, train_dataset, eval_dataset
            )
        uses_cache = has_cached_logits(getattr(train_dataset, "column_names", None) or ())
        self._cached_num_labels = (
            (self.teacher_cache_info or {}).get("num_labels") or _cached_width(train_dataset)
            if uses_cache
            else None
        )
        if teacher_model is not None or not uses_cache:
            _check_model("teacher_model", teacher_model, hint=not uses_cache)
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.eval()
            teacher_model.requires_grad_(False)
            self._teacher_input_names = set(inspect.signature(teacher_model.forward).parameters)
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
        if teacher_model is not None and not hasattr(teacher_model, "hf_device_map"):
            teacher_model.to(self.args.device)
        self._window_counts: ItemCounts | None = None
        self.model_card_scores: dict[str, float] | None = None  # test scores for the model card, if known
        self._component_totals = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._component_steps = {"train": 0, "eval": 0}

    # ------------------------------------------------------------------------------------- student setup

    def _setup_student(self, model: PreTrainedModel, args: DistillationTrainingArguments) -> None:
        """Layer pairs, projections and attention dropout for `model` under the current settings.

        Runs for the constructor's student and again for each student `model_init` creates (every
        hyper-parameter trial), so a trial that turns a loss on gets its pairs and projections.
        """
        if args.quantization_aware:  # before the projections are attached: only the student's own layers
            make_quantization_aware(model)  # in place: same parameters, so optimizer and checkpoints agree
        _check_model("model (the student)", model)
        # A weight that is 0 now but scheduled to grow still needs its outputs and projections from the start.
        need_hidden = args.max_weight("hidden_weight") > 0
        need_attention = args.max_weight("attention_weight") > 0
        teacher = self.teacher_model
        if teacher is None:
            if need_hidden or need_attention:
                raise ValueError(
                    "hidden_weight / attention_weight > 0 need the teacher's hidden states / attention maps, "
                    "which the teacher cache does not hold: pass teacher_model (cached logits are then not "
                    "used), or set both weights (and their schedules' ends) to 0."
                )
            pairs = ()
        else:
            pairs = check_compatible(model, teacher, args.parsed_layer_mapping, need_hidden, need_attention)
        cached_labels = self._cached_num_labels
        if cached_labels is not None and cached_labels != model.config.num_labels:
            raise ValueError(
                f"The teacher cache holds {cached_labels} logits per example but the student predicts "
                f"{model.config.num_labels} labels; load the student with num_labels={cached_labels}."
            )
        self.hidden_pairs = pairs if need_hidden else ()
        self.attention_pairs = tuple((s, t) for s, t in pairs if s > 0) if need_attention else ()
        if need_attention:
            disable_attention_probs_dropout(model)
        self._student_layers = model.config.num_hidden_layers
        student_width = model.config.hidden_size
        if need_hidden and student_width != teacher.config.hidden_size:
            projections = attach_projections(
                model, self.hidden_pairs, student_width, teacher.config.hidden_size
            )
            install_projection_hook(model, projections, self.hidden_pairs)

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
        # Keep the cache columns, which the student's forward does not take: compute_loss pops them.
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in CACHE_COLUMNS if c not in self._signature_columns]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not all(inputs.get(k) is not None for k in self.label_names):
            # Without labels Trainer calls the model directly, which does not take the cache columns.
            inputs = {k: v for k, v in inputs.items() if k not in CACHE_COLUMNS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # ----------------------------------------------------------------------------------------------- loss

    def loss_settings(self) -> LossSettings:
        """Temperature and weights at the current step (progress = global_step / max_steps)."""
        max_steps = self.state.max_steps
        return self.args.loss_settings(self.state.global_step / max_steps if max_steps > 0 else 0.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        settings = self.loss_settings()
        inputs = dict(inputs)
        num_labels = self.accelerator.unwrap_model(model).config.num_labels
        cached_logits = pop_cached_logits(inputs, num_labels)  # (B, C), or None without a cache
        requested = {}
        if self.hidden_pairs:
            requested["output_hidden_states"] = True
        if self.attention_pairs:
            requested["output_attentions"] = True

        student_out = model(**inputs, **requested)
        teacher_out = None
        if cached_logits is None or requested:  # hidden states / attention maps only come from a live teacher
            teacher_out = self._run_teacher(inputs, requested)
        teacher_logits = teacher_out.logits if teacher_out is not None else cached_logits

        counts, scale = self._counts(model, inputs)
        mask = inputs.get("attention_mask")
        components = {"soft": self._soft_loss(student_out.logits, teacher_logits, mask, counts, settings)}
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

        weights = {
            "soft": settings.alpha,
            "hard": 1 - settings.alpha,
            "hidden": settings.hidden_weight,
            "attention": settings.attention_weight,
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

    def _run_teacher(self, inputs: dict, requested: dict):
        if self.teacher_model is None:
            raise TeacherCacheError(
                "This batch has no cached teacher logits and the trainer has no teacher_model: attach the "
                "cache to every dataset you train or evaluate on, or pass teacher_model."
            )
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels" and k in self._teacher_input_names}
        with torch.no_grad(), self.accelerator.autocast():
            return self.teacher_model(**teacher_inputs, **requested)

    def _soft_loss(
        self, student_logits, teacher_logits, mask, counts: ItemCounts, settings: LossSettings
    ) -> torch.Tensor:
        problem_type = self.accelerator.unwrap_model(self.model).config.problem_type
        if student_logits.dim() == 3:  # token classification: one distribution per real token
            problem_type, normalizer = "single_label_classification", "tokens"
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

    # ------------------------------------------------------------------- accumulation-window item counts

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count examples / tokens / labels over the whole window and all processes."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            local = ItemCounts.total(batch_samples).as_tensor().to(device)
            self._window_counts = ItemCounts.from_tensor(self.accelerator.gather(local[None]).sum(0))
            self._component_steps["train"] += 1
            if num_items_in_batch is None:
                # Non-None tells training_step that compute_loss already accounts for accumulation.
                num_items_in_batch = self._window_counts.examples
        return batch_samples, num_items_in_batch

    def _counts(self, model, inputs) -> tuple[ItemCounts, int]:
        """Normalising counts and the DDP correction factor for this micro-batch."""
        if model.training and self._window_counts is not None:
            return self._window_counts, self.accelerator.num_processes
        return ItemCounts.of_batch(inputs), 1

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._window_counts = None

    # --------------------------------------------------------------------------------------------- logging

    def _record_components(self, components: dict[str, torch.Tensor], mode: str) -> None:
        totals = self._component_totals[mode]
        for name, value in components.items():
            totals[name] = totals[name] + value.detach().float()
        if mode == "eval":
            self._component_steps["eval"] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss component since the last log (`loss_soft`, `eval_loss_hard`, ...)."""
        mode = "eval" if "eval_loss" in logs else "train" if "loss" in logs else None
        if mode is not None and self._component_totals[mode] and self._component_steps[mode]:
            totals, steps = self._component_totals[mode], self._component_steps[mode]
            names = sorted(totals)
            local = torch.stack([torch.as_tensor(totals[n], device=self.args.device) for n in names]) / steps
            means = self.accelerator.gather(local[None]).mean(0)
            prefix = "eval_" if mode == "eval" else ""
            logs.update(
                {
                    f"{prefix}loss_{name}": round(value.item(), 6)
                    for name, value in zip(names, means, strict=True)
                }
            )
            self._component_totals[mode] = defaultdict(float)
            self._component_steps[mode] = 0
        if mode == "train":
            settings = self.loss_settings()
            logs["temperature"], logs["alpha"] = round(settings.temperature, 6), round(settings.alpha, 6)
            for name in ("hidden_weight", "attention_weight"):
                if name in self.args.scheduled:
                    logs[name] = round(getattr(settings, name), 6)
        super().log(logs, start_time)

    # ---------------------------------------------------------------------------------------------- saving

    def _save_checkpoint(self, model, trial):
        # Checkpoints keep the projections inside the student's weights so that resuming restores them.
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def _save(self, output_dir: str | None = None, state_dict=None):
        student = self.accelerator.unwrap_model(self.model)
        if getattr(self, "_saving_checkpoint", False) or not hasattr(student, "distillation_projections"):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state_dict = state_dict if state_dict is not None else student.state_dict()
        student_state, projection_state = split_projection_state(state_dict)
        super()._save(output_dir, student_state)
        projection_state = {k: v.detach().contiguous().cpu() for k, v in projection_state.items()}
        safetensors.torch.save_file(projection_state, os.path.join(output_dir, PROJECTIONS_FILE))

    # ------------------------------------------------------------------------------------------ model card

    def distillation_summary(self) -> dict:
        """How the student was taught: teacher, shapes, losses and weights, layer mapping, training settings."""
        return distillation_summary(self)

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Write README.md in output_dir: the distillation model card (also what `push_to_hub` uploads)."""
        if not self.is_world_process_zero():
            return
        name = model_name or self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        summary = self.distillation_summary()
        if summary["teacher_shape"] is None:
            logger.warning("No model card: the teacher is unknown (pass teacher_model or use teacher_cache).")
            return
        card = render_model_card(summary, self.model_card_scores, name)
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, "README.md"), "w") as f:
            f.write(card)
