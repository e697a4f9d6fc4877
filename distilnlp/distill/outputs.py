"""What `DistillationTrainer` writes: the loss components in the logs, the clean student (projections in
their own file), checkpoints that keep the projections, and the distillation model card."""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import safetensors.torch
import torch

from ..runs.artifacts import PROJECTIONS_FILE
from .arguments import FEATURE_WEIGHTS
from .layers import split_projection_state
from .model_card import build_model_card, distillation_summary

logger = logging.getLogger(__name__)


class DistillationOutputsMixin:
    """Logging, saving and model-card methods of `DistillationTrainer` (a `transformers.Trainer`)."""

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
            for name in FEATURE_WEIGHTS:
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

    def distillation_summary(self, changed_on_resume: dict | None = None) -> dict:
        """How the student was taught: teacher, shapes, losses and weights, layer mapping, training settings;
        `changed_on_resume` is {setting: [before, after]} for a run resumed with other settings."""
        return distillation_summary(self, changed_on_resume)

    def create_model_card(self, model_name: str | None = None, results: dict | None = None, **kwargs) -> None:
        """Write README.md in output_dir: the distillation model card (also what `push_to_hub` uploads, which
        passes its keyword arguments on: `push_to_hub(results=...)`).

        `results`: the summary and test scores as in distill_results.json (default: `distillation_summary()`,
        no scores). `tags`, `license` and `language` go into the card's metadata; other arguments are ignored.
        """
        if not self.is_world_process_zero():
            return
        name = model_name or self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        results = results if results is not None else self.distillation_summary()
        if results["teacher_shape"] is None and results["teacher_cache"] is None:
            logger.warning("No model card: the teacher is unknown (pass teacher_model or use teacher_cache).")
            return
        metadata = {key: kwargs[key] for key in ("license", "language") if kwargs.get(key) is not None}
        tags = kwargs.get("tags") or []
        card = build_model_card(results, name, [tags] if isinstance(tags, str) else tags, **metadata)
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))
