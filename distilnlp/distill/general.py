"""General (task-agnostic) distillation, as MiniLMv2 / TinyBERT's first stage: a student encoder learns the
teacher encoder's self-attention relations (and optionally hidden states) on unlabelled text, before any task.

`GeneralDistillationTrainer` is a `transformers.Trainer` (so `accelerate launch`, checkpoints, resume, logging
work unchanged) whose loss is

    L = mean over (layer pair, relation type) of KL(R_t || R_s)  +  hidden_weight * L_hidden

with the relations of `relation.RelationDistillation` (Q-Q, K-K, V-V of the mapped layers, `relation_heads`
relation heads) and the hidden-state loss of `losses.HIDDEN_LOSSES`, each per real token of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, Trainer

from .counts import ItemCounts
from .layers import LayerMapping
from .losses import HIDDEN_LOSSES
from .relations import RELATION_TYPES, RelationDistillation
from .stage_arguments import StageTrainingArguments, list_items
from .trainer import NonFiniteLossError

GENERAL_FIELDS = (
    "relation_layers", "relation_types", "relation_heads", "hidden_weight", "hidden_loss", "hidden_layers",
)  # fmt: skip


@dataclass
class GeneralDistillationArguments(StageTrainingArguments):
    """`TrainingArguments` plus the losses of general distillation (MiniLMv2 relations, hidden states)."""

    relation_layers: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={
            "help": "Which student layer's Q/K/V relations learn from which teacher layer's: 'last' (MiniLMv2 for "
            "small teachers), 'uniform', or student:teacher pairs such as '4:9' (MiniLMv2 takes an upper-middle "
            "layer of a large teacher); encoder layers counted from 1; comma- or space-separated."
        },
    )
    relation_types: list[str] = field(
        default_factory=lambda: ["q", "k", "v"],
        metadata={"help": "Relations to distill: a subset of q, k, v, comma- or space-separated."},
    )
    relation_heads: int | None = field(
        default=None,
        metadata={
            "help": "Relation heads A (each relation uses d = width / A); must divide the student's and the "
            "teacher's widths. Unset: the student's attention-head count."
        },
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={"help": "Weight (>= 0) of the hidden-state loss (needs equal student and teacher widths)."},
    )
    hidden_loss: str = field(default="mse", metadata={"help": "Hidden-state loss: mse or cosine."})
    hidden_layers: list[str] = field(
        default_factory=lambda: ["uniform"],
        metadata={
            "help": "Hidden-state layer pairs: 'uniform', 'last' or student:teacher pairs (0 = embeddings)."
        },
    )

    def __post_init__(self):
        # Flags give lists of words, recipes text or lists: one typed list each (as DistillationTrainingArguments).
        self.relation_types = [kind.lower() for kind in list_items(self.relation_types)]
        self.relation_layers = list_items(self.relation_layers)
        self.hidden_layers = list_items(self.hidden_layers)
        if self.ddp_static_graph is None:
            # The loss reads Q/K/V (and hidden states) of chosen layers: what comes after them (the last layer's
            # attention output and feed-forward with 'last', the pooler) is in the forward's outputs yet gets no
            # gradient. DDP's search for unused parameters starts from the outputs and so waits for those
            # gradients forever; a static graph learns in the first step which parameters get none.
            self.ddp_static_graph = True
        super().__post_init__()
        if self.hidden_weight < 0:
            raise ValueError(f"hidden_weight must be >= 0, got {self.hidden_weight}.")
        if self.hidden_loss not in HIDDEN_LOSSES.names():
            raise ValueError(f"hidden_loss must be one of {HIDDEN_LOSSES.names()}, got {self.hidden_loss!r}.")
        if self.relation_heads is not None and self.relation_heads < 1:
            raise ValueError(f"relation_heads must be >= 1 or unset, got {self.relation_heads}.")
        LayerMapping.parse(list_items(self.hidden_layers))
        _ = self.parsed_relation_types, self.parsed_relation_layers

    @property
    def parsed_relation_types(self) -> tuple[str, ...]:
        kinds = tuple(kind.lower() for kind in list_items(self.relation_types))
        if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(RELATION_TYPES):
            raise ValueError(
                f"relation_types={','.join(kinds)!r}: give distinct relations from q, k, v, such as 'q,k,v'."
            )
        return kinds

    @property
    def parsed_relation_layers(self) -> LayerMapping:
        try:
            return LayerMapping.parse(list_items(self.relation_layers))
        except ValueError as error:  # the parser's message names layer_mapping
            raise ValueError(str(error).replace("layer_mapping", "relation_layers")) from None

    def settings(self) -> dict:
        """What the run optimises and for how long (recorded in output_dir, compared on resume)."""
        return {
            "distillation": {name: getattr(self, name) for name in GENERAL_FIELDS},
            "length": {"max_steps": self.max_steps, "num_train_epochs": self.num_train_epochs},
        }


class GeneralDistillationTrainer(Trainer):
    """Trains a bare student encoder (e.g. `BertModel`) on the teacher encoder's relations and hidden states.

    The training data are token windows (`input_ids`, `attention_mask`[, `token_type_ids`]) that student and
    teacher read alike (one tokenizer). The teacher is frozen, in evaluation mode, placed as the student.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        teacher_model: PreTrainedModel,
        args: GeneralDistillationArguments,
        **kwargs,
    ):
        super().__init__(model=model, args=args, **kwargs)
        if teacher_model.config.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"The student's vocabulary ({model.config.vocab_size}) is not the teacher's "
                f"({teacher_model.config.vocab_size}): general distillation feeds both the same token ids."
            )
        teacher_model.eval().requires_grad_(False)
        self.teacher = teacher_model.to(self.args.device)
        self.relations = RelationDistillation(model, self.teacher, args)
        self.hidden_pairs: tuple[tuple[int, int], ...] = ()
        if args.hidden_weight > 0:
            if model.config.hidden_size != teacher_model.config.hidden_size:
                raise ValueError(
                    f"hidden_weight > 0 needs equal widths, but the student has {model.config.hidden_size} and "
                    f"the teacher {teacher_model.config.hidden_size}; set hidden_weight 0 (relations need none)."
                )
            self.hidden_pairs = LayerMapping.parse(list_items(args.hidden_layers)).resolve(
                model.config.num_hidden_layers, teacher_model.config.num_hidden_layers
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Relation loss (+ hidden_weight * hidden loss) of one batch; each per real token of the batch."""
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = bool(self.hidden_pairs)
        student_out = model(**inputs, output_hidden_states=hidden)
        with torch.no_grad():
            teacher_out = self.teacher(**inputs, output_hidden_states=hidden)
        mask = inputs.get("attention_mask")
        counts = ItemCounts.of_batch(inputs)
        components = {"relation": self.relations.loss(mask, counts)}
        loss = components["relation"]
        if hidden:
            spec = HIDDEN_LOSSES.get(self.args.hidden_loss)
            terms = [
                spec.fn(student_out.hidden_states[s], teacher_out.hidden_states[t], mask, reduction="sum")
                for s, t in self.hidden_pairs
            ]
            components["hidden"] = torch.stack(terms).mean() / counts[spec.normalizer]
            loss = loss + self.args.hidden_weight * components["hidden"]
        loss = loss.float()  # the counts are float64 (exact sums); the optimiser's loss is float32
        if not torch.isfinite(loss.detach()):
            detail = ", ".join(f"{name}={value.item():.4g}" for name, value in components.items())
            raise NonFiniteLossError(
                f"The general distillation loss is not finite at step {self.state.global_step} ({detail}); "
                "lower the learning rate or check the corpus for empty windows."
            )
        return (loss, student_out) if return_outputs else loss
