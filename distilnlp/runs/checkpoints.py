"""Resuming a run safely: which checkpoint is whole, whether the run already finished, and whether the
distillation settings changed since its checkpoints were written.

`Trainer` writes a checkpoint in this order: weights (+ config), optimizer, scheduler, RNG state, and
`trainer_state.json` last. A process killed (or out of disk) in the middle leaves a folder that
`get_last_checkpoint` still picks and `Trainer` then refuses ("Can't find a valid checkpoint") or, worse,
loads half. Here a checkpoint counts only when every part it needs is present and loads.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from .artifacts import RUN_SETTINGS_FILE

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Distillation settings whose change does not block a resume, with the reason: they cannot change what the
# run trains. Every other setting (`distillation_fields`) does.
CHANGEABLE_ON_RESUME = {
    "teacher_cache_batch_size": "only how many rows the teacher scores at once while building a missing cache",
}


class CheckpointError(ValueError):
    """A checkpoint named with `resume_from_checkpoint` cannot be resumed."""


class ChangedSettingsError(ValueError):
    """Resuming would continue a run with other distillation settings than it was trained with."""


# ------------------------------------------------------------------------------------------ checkpoint checks


def _first_line(error: Exception, limit: int = 120) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _weights_problem(folder: Path) -> str | None:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    try:
        if single.is_file():
            load_file(str(single))
        elif index.is_file():
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                load_file(str(folder / shard))
        elif (folder / "pytorch_model.bin").is_file():
            torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            return "no model weights"
    except Exception as error:  # safetensors / zip / json raise many types for a truncated file
        return f"the weights do not load ({_first_line(error)})"
    return None


def checkpoint_problem(folder: str | Path, need_optimizer: bool = True) -> str | None:
    """Why `folder` cannot be resumed from, or None when every part is present and loads.

    Parts: `trainer_state.json` (written last, so its absence means an interrupted save), the weights, and
    (unless `need_optimizer=False`, i.e. `save_only_model`) `optimizer.pt` and `scheduler.pt`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (the save was interrupted)"
    try:
        int(json.loads(state_file.read_text())["global_step"])
    except Exception as error:
        return f"{TRAINER_STATE} is unreadable ({_first_line(error)})"
    problem = _weights_problem(folder)
    if problem or not need_optimizer:
        return problem
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (folder / name).is_file():
            return f"no {name}"
        try:
            torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as error:
            return f"{name} does not load ({_first_line(error)})"
    return None


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def resumable_checkpoint(output_dir: str | Path, need_optimizer: bool = True) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that is complete and loads; skipped ones are logged."""
    for folder in checkpoints_newest_first(output_dir):
        problem = checkpoint_problem(folder, need_optimizer)
        if problem is None:
            return str(folder)
        logger.warning("Skipping checkpoint %s: %s; trying the one before.", folder, problem)
    return None


# ------------------------------------------------------------------------------------------------ settings


def read_run_settings(folder: str | Path) -> dict | None:
    path = Path(folder) / RUN_SETTINGS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def settings_changes(recorded: dict | None, current: dict) -> dict[str, list]:
    """{name: [value recorded, value now]} for every distillation setting that differs (but those in
    `CHANGEABLE_ON_RESUME`). A setting the record lacks (written before it existed) is not compared."""
    if not recorded:
        return {}
    old, new = recorded.get("distillation", {}), current["distillation"]
    return {
        name: [old[name], new[name]]
        for name in new
        if name in old and old[name] != new[name] and name not in CHANGEABLE_ON_RESUME
    }


def describe_changes(changes: dict[str, list]) -> str:
    return ", ".join(f"{name} {old!r} in the checkpoint, {new!r} now" for name, (old, new) in changes.items())


class RunSettingsCallback(TrainerCallback):
    """Writes the run's settings (and any settings changed on resume) into output_dir when training starts.

    At `on_train_begin` every process has already chosen its checkpoint, so no rank reads the new file.
    """

    def __init__(self, settings: dict, changes: dict[str, list] | None = None, checkpoint: str | None = None):
        self.settings, self.changes, self.checkpoint = settings, changes or {}, checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        history = (read_run_settings(args.output_dir) or {}).get("changed_on_resume", [])
        if self.changes:
            history = [*history, {"checkpoint": self.checkpoint, "changes": self.changes}]
        record = {**self.settings, "changed_on_resume": history}
        path = Path(args.output_dir) / RUN_SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class ResumePlan:
    """What a stage does with its output_dir: resume `checkpoint`, or return `finished` results as they are."""

    checkpoint: str | None = None
    finished: dict | None = None
    changes: dict[str, list] = field(default_factory=dict)


def _finished_results(output_dir: Path, results_file: str) -> dict | None:
    """The results of a run that completed in `output_dir` (final model, results and final state), or None."""
    results, state = output_dir / results_file, output_dir / TRAINER_STATE
    if not (results.is_file() and state.is_file() and (output_dir / "config.json").is_file()):
        return None
    if _weights_problem(output_dir) is not None:
        return None
    try:
        record = json.loads(state.read_text())
        done = record["max_steps"] > 0 and record["global_step"] >= record["max_steps"]
        return json.loads(results.read_text()) if done else None
    except (ValueError, KeyError, TypeError):
        return None


def plan_resume(args, settings: dict, results_file: str) -> ResumePlan:
    """Decide how a stage starts in `args.output_dir` (see the README's "Reliability" section).

    - `overwrite_output_dir`: start over.
    - A finished run with the same settings and length: return its results, train nothing.
    - Otherwise resume the newest complete checkpoint (or the one named by `resume_from_checkpoint`, which must
      be complete), refusing other distillation settings unless `allow_changed_settings`.
    """
    output_dir = Path(args.output_dir)
    if getattr(args, "overwrite_output_dir", False) or not output_dir.is_dir():
        return ResumePlan()
    recorded = read_run_settings(output_dir)
    changes = settings_changes(recorded, settings)
    finished = _finished_results(output_dir, results_file)
    if finished is not None and (recorded is None or recorded.get("length") == settings["length"]):
        if changes:
            raise ChangedSettingsError(
                f"{output_dir} holds a finished run trained with other settings ({describe_changes(changes)}). "
                "Pass --overwrite_output_dir true to train again with the new ones, or choose another output_dir."
            )
        logger.warning(
            "%s already holds a finished run; returning its results without training again "
            "(pass --overwrite_output_dir true to start over).",
            output_dir,
        )
        return ResumePlan(finished=finished)
    explicit = args.resume_from_checkpoint
    if explicit and explicit.lower() not in ("true", "false"):
        problem = checkpoint_problem(explicit, need_optimizer=not args.save_only_model)
        if problem:
            raise CheckpointError(
                f"Cannot resume from {explicit}: {problem}. Name another checkpoint-* folder, or drop "
                "--resume_from_checkpoint to resume from the newest complete one."
            )
        checkpoint = explicit
    else:
        checkpoint = resumable_checkpoint(output_dir, need_optimizer=not args.save_only_model)
    if checkpoint is None:
        return ResumePlan()
    if changes and not getattr(args, "allow_changed_settings", False):
        raise ChangedSettingsError(
            f"Resuming {checkpoint} with other distillation settings: {describe_changes(changes)}. Pass "
            "--allow_changed_settings true to continue with the new values (the model card records both), "
            "--overwrite_output_dir true to start over, or the old values."
        )
    if changes:
        logger.warning("Resuming %s with changed settings: %s.", checkpoint, describe_changes(changes))
    logger.warning("Resuming from %s (pass --overwrite_output_dir true to start over).", checkpoint)
    return ResumePlan(checkpoint=checkpoint, changes=changes)
