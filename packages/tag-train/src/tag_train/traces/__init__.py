"""TAG-310K-style trace building: quality filter -> landmarks -> AU detector -> activated list
-> teacher -> rejection sampling, saved as a Hugging Face dataset (resumable, idempotent)."""

from tag_train.traces._builder import (
    FINAL_STATUSES,
    BuildSummary,
    TeacherOutageError,
    TraceBuildConfig,
    build_traces,
    load_records,
    parse_shard,
    student_prompt,
)
from tag_train.traces._combine import ShardCombineError, combine_shards
from tag_train.traces._prompt import coordinate_note, teacher_system_prompt, teacher_user_prompt

__all__ = [
    "FINAL_STATUSES",
    "BuildSummary",
    "ShardCombineError",
    "TeacherOutageError",
    "TraceBuildConfig",
    "build_traces",
    "combine_shards",
    "coordinate_note",
    "load_records",
    "parse_shard",
    "student_prompt",
    "teacher_system_prompt",
    "teacher_user_prompt",
]
