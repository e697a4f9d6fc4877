"""The student of a sentence-embedding teacher, as a `SentenceTransformer` with the teacher's pooling.

    student = create_sentence_student(teacher, num_layers=2)            # layer copies of the teacher's encoder
    student = create_sentence_student(teacher, student_path="small/")   # any encoder; Dense projection if narrower

The student keeps the teacher's pooling and normalization (sentence-transformers' own modules), so its
embedding lives in the teacher's space. A student of another width gets a learned linear `Dense` projection
(no activation) to the teacher's width, before `Normalize`: it is part of the saved student, since the
embedding is read after it.
"""

from __future__ import annotations

import copy

from torch import nn

from ..runs.sentence_folder import describe_pooling, encoder_of, load_sentence_model
from .student import create_student


def create_sentence_student(
    teacher,
    num_layers: int | None = None,
    layers: str = "uniform",
    student_path: str | None = None,
):
    """A `SentenceTransformer` student of `teacher`: `num_layers` copied teacher layers (`create_student`'s
    `layers` choice), or the encoder in `student_path` with the teacher's pooling (and a projection when the
    widths differ). Its `max_seq_length` is the teacher's."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    facts = describe_pooling(teacher)
    if student_path is None:
        if num_layers is None:
            raise ValueError(
                "Give the student's depth (--student_layers N) or a student model (--student_model)."
            )
        student = copy.deepcopy(teacher)
        student[0].model = create_student(encoder_of(teacher), num_layers, layers)
        return student
    if facts["dense"]:
        raise ValueError("A teacher with Dense modules needs a layer-copy student (--student_layers N).")
    plain = load_sentence_model(
        student_path, pooling=facts["pooling"], max_seq_length=teacher.max_seq_length, role="student"
    )
    modules = [m for m in plain if not isinstance(m, Normalize)]
    width = plain.get_embedding_dimension()
    if width != facts["dimension"]:
        modules.append(Dense(width, facts["dimension"], activation_function=nn.Identity()))
    if facts["normalize"]:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")
