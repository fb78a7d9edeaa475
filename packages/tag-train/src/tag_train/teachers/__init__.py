"""Trace teachers: an OpenAI-compatible client, a local HF VLM and an offline template writer.

Every teacher answers :class:`TeacherRequest` batches with :class:`TeacherReply` objects and
never raises on a failed generation (the reply carries ``meta["error"]``).
"""

from tag_train.teachers._base import ActivatedEntry, Teacher, TeacherReply, TeacherRequest
from tag_train.teachers._hf import HFTeacher
from tag_train.teachers._openai import OpenAITeacher, image_data_url
from tag_train.teachers._template import TemplateTeacher

__all__ = [
    "ActivatedEntry",
    "HFTeacher",
    "OpenAITeacher",
    "Teacher",
    "TeacherReply",
    "TeacherRequest",
    "TemplateTeacher",
    "image_data_url",
]
