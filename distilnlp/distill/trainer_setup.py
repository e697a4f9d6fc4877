"""How `DistillationTrainer` sets itself up: the teacher cache attached to the datasets, the teachers checked,
frozen and placed, the student's layer pairs, projections and attention dropout, the augmenter."""

from __future__ import annotations

import inspect
import logging

from accelerate.utils import DistributedType
from transformers import PreTrainedModel

from ..data.teacher_inputs import check_cross_tokenizer
from ..int8.quantization_aware import make_quantization_aware
from ..teacher_cache import LOGITS, TeacherCacheError, attach_teacher_cache, has_cached_logits
from .arguments import DistillationTrainingArguments
from .augment import Augmenter
from .layers import attach_projections, check_compatible, install_projection_hook
from .relations import RelationDistillation
from .student import disable_attention_probs_dropout
from .teachers import (
    as_teacher_list,
    check_teachers,
    feature_teacher_of,
    label_names_of,
    teacher_label_orders,
    teacher_weight_tensor,
)

logger = logging.getLogger(__name__)


def check_model(role: str, candidate, hint: bool = False) -> None:
    if not isinstance(candidate, PreTrainedModel):
        extra = " (to train without a teacher, use cached teacher logits: set teacher_cache)" if hint else ""
        raise TypeError(
            f"{role} must be a transformers PreTrainedModel, got {type(candidate).__name__}{extra}."
        )


def _onnx_export(backend: str):
    """`distilnlp.onnx.export_teacher` for the teacher cache's ONNX backends (imported only when one is used);
    the cache package sits below the exporter and gets it passed in."""
    if backend == "torch":
        return None
    from ..onnx import export_teacher

    return export_teacher


def _cached_width(dataset) -> int | None:
    """Logits per example of a dataset with a full `teacher_logits` column (None for top-k columns)."""
    feature = getattr(dataset, "features", {}).get(LOGITS)
    length = getattr(feature, "length", -1)
    return length if length and length > 0 else None


def checked_arguments(args: DistillationTrainingArguments | None) -> DistillationTrainingArguments:
    """`args`, or the defaults when None; a TypeError for plain `TrainingArguments`."""
    if args is None:
        args = DistillationTrainingArguments(output_dir="distilnlp-output")
    if not isinstance(args, DistillationTrainingArguments):
        raise TypeError(
            f"DistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}. Build them "
            "with the same fields plus the distillation ones: DistillationTrainingArguments(output_dir=...)."
        )
    return args


def _check_token_options(args, train_dataset) -> None:
    """Options not built for token classification (labels per token) fail here rather than train wrongly."""
    labels = (getattr(train_dataset, "features", None) or {}).get("labels")
    if not hasattr(labels, "feature"):  # one label per example
        return
    if args.teacher_cache:
        raise TeacherCacheError(
            "teacher_cache stores one logit vector per example; per-token logits of token classification are "
            "not cached yet: drop teacher_cache (the teacher then runs live)."
        )
    if args.augmentation != "none":
        raise ValueError(
            f"augmentation={args.augmentation!r} would move tokens away from their word labels; token "
            "classification supports augmentation='none' only."
        )


class TrainerSetupMixin:
    """Set-up steps of `DistillationTrainer` (a `transformers.Trainer`), run by its constructor and, for the
    student, again for every student `model_init` creates."""

    def _attach_teacher_cache(self, args, teacher_model, processing_class, train_dataset, eval_dataset):
        """(train, eval datasets) with the teacher cache's logits attached when `args.teacher_cache` is used;
        sets `teacher_cache_info` (the cache's metadata, or None)."""
        self.teacher_cache_info: dict | None = None
        _check_token_options(args, train_dataset)
        if args.teacher_cache and not args.uses_teacher:
            logger.warning(
                "teacher_cache is not used: alpha and every feature weight are 0 (plain fine-tuning), so no "
                "teacher logits are needed."
            )
        elif args.teacher_cache:
            train_dataset, eval_dataset, self.teacher_cache_info = attach_teacher_cache(
                args,
                teacher_model,
                processing_class,
                train_dataset,
                eval_dataset,
                self.teacher_inputs,
                onnx_export=_onnx_export(args.teacher_cache_backend),
            )
        return train_dataset, eval_dataset

    def _set_teachers(self, teacher_model, args, train_dataset) -> list[PreTrainedModel]:
        """Check and freeze the teachers (in eval mode, no gradients); set their count, weights and the
        feature teacher, and the logits per teacher of the cached column. Returns the teachers."""
        uses_cache = has_cached_logits(getattr(train_dataset, "column_names", None) or ())
        teachers = as_teacher_list(teacher_model)
        self._num_teachers = len(teachers) or (self.teacher_cache_info or {}).get("num_teachers", 1)
        self._teacher_weights = teacher_weight_tensor(args.teacher_weights, self._num_teachers)
        width = _cached_width(train_dataset)
        self._cached_num_labels = (
            (self.teacher_cache_info or {}).get("num_labels") or (width and width // self._num_teachers)
            if uses_cache
            else None
        )
        if teachers or (args.uses_teacher and not uses_cache):
            for teacher in teachers or [None]:
                check_model("teacher_model", teacher, hint=not uses_cache)
        self.teachers = teachers
        self.teacher_model = feature_teacher_of(teachers, args.feature_teacher)  # features come from this one
        for teacher in teachers:
            teacher.eval()
            teacher.requires_grad_(False)
        if self.teacher_model is not None:
            self._teacher_input_names = set(inspect.signature(self.teacher_model.forward).parameters)
        return teachers

    def _prepare_teacher(self, teacher: PreTrainedModel) -> PreTrainedModel:
        """`teacher` placed as accelerate places the student (device, mixed-precision forward, `torch.compile` when
        configured), the way TRL prepares its teacher and reference models; still in eval mode and frozen.

        `evaluation_mode`: no DDP / FSDP wrapper, as nothing trains it. Under FSDP accelerate leaves placement to
        that wrapper, so the teacher is moved to the device whole (as before). A teacher loaded with a `device_map`
        stays where it is.
        """
        if hasattr(teacher, "hf_device_map"):
            return teacher
        accelerator = self.accelerator
        fsdp = accelerator.distributed_type == DistributedType.FSDP
        prepared = accelerator.prepare_model(
            teacher, device_placement=True if fsdp else None, evaluation_mode=True
        )
        # Not one of the models the Trainer prepares, saves and restores: `evaluate` before `train` prepares the
        # student only while accelerate holds no model (`train` clears the list itself, `free_memory`).
        if prepared in accelerator._models:
            accelerator._models.remove(prepared)
        return prepared

    def _setup_student(self, model: PreTrainedModel, args: DistillationTrainingArguments) -> None:
        """Layer pairs, projections and attention dropout for `model` under the current settings.

        Runs for the constructor's student and again for each student `model_init` creates (every
        hyper-parameter trial), so a trial that turns a loss on gets its pairs and projections.
        """
        if args.quantization_aware:  # before the projections are attached: only the student's own layers
            make_quantization_aware(model)  # in place: same parameters, so optimizer and checkpoints agree
        check_model("model (the student)", model)
        # A weight that is 0 now but scheduled to grow still needs its outputs and projections from the start.
        need_hidden = args.max_weight("hidden_weight") > 0
        need_attention = args.max_weight("attention_weight") > 0
        need_relation = args.max_weight("relation_weight") > 0
        teacher = self.teacher_model
        if self.teacher_inputs is not None:
            check_cross_tokenizer(model, teacher, args)
        if teacher is None:
            if need_hidden or need_attention or need_relation:
                raise ValueError(
                    "hidden_weight / attention_weight / relation_weight > 0 need the teacher's hidden states / "
                    "attention maps / queries, keys and values, which the teacher cache does not hold: pass "
                    "teacher_model (cached logits are then not used), or set those weights (and their "
                    "schedules' ends) to 0."
                )
            pairs = ()
        else:
            mapping, same_ids = args.parsed_layer_mapping, self.teacher_inputs is None
            pairs = check_compatible(model, teacher, mapping, need_hidden, need_attention, same_ids)
            if same_ids:  # across tokenizers the vocabularies differ by design (check_cross_tokenizer above)
                check_teachers(model, self.teachers)
        cached_labels = self._cached_num_labels
        if cached_labels is not None and cached_labels != model.config.num_labels:
            raise ValueError(
                f"The teacher cache holds {cached_labels} logits per example but the student predicts "
                f"{model.config.num_labels} labels; load the student with num_labels={cached_labels}."
            )
        # Teachers' logits in the student's (the task's) class order, matched by name.
        self._label_orders = teacher_label_orders(
            self.teachers, self.teacher_cache_info, label_names_of(model.config)
        )
        self.hidden_pairs = pairs if need_hidden else ()
        self.attention_pairs = tuple((s, t) for s, t in pairs if s > 0) if need_attention else ()
        if need_attention:
            disable_attention_probs_dropout(model)
        if getattr(self, "relations", None) is not None:  # hooks of a previous student / trial
            self.relations.remove()
        self.relations = RelationDistillation(model, teacher, args) if need_relation else None
        self._student_layers = model.config.num_hidden_layers
        student_width = model.config.hidden_size
        if need_hidden and student_width != teacher.config.hidden_size:
            projections = attach_projections(
                model, self.hidden_pairs, student_width, teacher.config.hidden_size
            )
            install_projection_hook(model, projections, self.hidden_pairs)

    def _make_augmenter(self, args, model) -> Augmenter | None:
        """The training-window augmenter of `args.augmentation`, or None for "none"."""
        if args.augmentation == "none":
            return None
        pad_token_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        return Augmenter.from_tokenizer(
            args.augmentation, args.augmentation_prob, self.processing_class, pad_token_id
        )
