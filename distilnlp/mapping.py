"""Which student layer learns from which teacher layer.

Layers are counted from 1 (the first encoder layer); 0 is the embedding output, as in `hidden_states[0]`.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("uniform", "last")


@dataclass(frozen=True)
class LayerMapping:
    """A layer-mapping spec: `uniform`, `last`, or explicit `(student, teacher)` pairs.

    - `uniform`: embeddings 0:0, then student layer i <- teacher layer floor(i * T / S) (TinyBERT),
      e.g. 3 student layers of a 6-layer teacher: 0:0, 1:2, 2:4, 3:6. These are the layers
      `create_student(teacher, S)` copies, so each student layer learns from the layer it started as.
    - `last`: the last student layer <- the last teacher layer (DistilBERT-style).
    - explicit pairs parsed from `"1:2,2:4,3:6"`.
    """

    strategy: str
    pairs: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> LayerMapping:
        """Parse `uniform`, `last` or `"s:t,s:t,..."`; raises `ValueError` naming the bad part."""
        text = spec.strip()
        if text in STRATEGIES:
            return cls(text)
        pairs = []
        for part in text.split(","):
            fields = part.strip().split(":")
            if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
                raise ValueError(
                    f"layer_mapping={spec!r}: cannot read {part.strip()!r}. Use 'uniform', 'last', or "
                    "comma-separated student:teacher layer pairs such as '1:2,2:4,3:6' (0 = embedding output)."
                )
            pairs.append((int(fields[0]), int(fields[1])))
        students = [s for s, _ in pairs]
        if len(set(students)) != len(students):
            raise ValueError(f"layer_mapping={spec!r}: each student layer may appear only once.")
        return cls("explicit", tuple(pairs))

    def resolve(self, student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
        """Concrete `(student_layer, teacher_layer)` pairs for models of the given depths."""
        if self.strategy == "last":
            return ((student_layers, teacher_layers),)
        if self.strategy == "uniform":
            if student_layers > teacher_layers:
                raise ValueError(
                    f"layer_mapping='uniform' needs a student no deeper than the teacher, got {student_layers} "
                    f"student layers and {teacher_layers} teacher layers; give explicit pairs instead."
                )
            teacher = uniform_layers(student_layers, teacher_layers)
            return ((0, 0),) + tuple(zip(range(1, student_layers + 1), teacher, strict=True))
        for s, t in self.pairs:
            if s > student_layers or t > teacher_layers:
                raise ValueError(
                    f"layer_mapping pair {s}:{t} is out of range: the student has layers 0..{student_layers} "
                    f"and the teacher 0..{teacher_layers} (0 = embedding output)."
                )
        return self.pairs


def uniform_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """1-based teacher layers floor(i * T / S), i = 1..S: evenly spaced, always ending on the last layer."""
    return [i * teacher_layers // student_layers for i in range(1, student_layers + 1)]
