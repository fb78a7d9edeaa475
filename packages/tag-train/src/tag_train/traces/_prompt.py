"""Teacher prompts: the trace format, the activated list and label elimination, as text."""

from __future__ import annotations

from collections.abc import Sequence

from tag_train.teachers._base import ActivatedEntry

__all__ = ["coordinate_note", "teacher_system_prompt", "teacher_user_prompt"]

_FORMAT = """\
Global analysis: <one or two sentences on the whole face>
Verification loop:
Inspect <region> → <what you see there> → AU<n> [AU<m> ...] <bbox>[x1,y1,x2,y2]</bbox>
(one "Inspect" line per region you check; every line ends with the AU codes it grounds and one box)
Final conclusion: Combined AU<a> + AU<b> indicate a dominant emotion of <label>.
<answer> <label> </answer>"""


def coordinate_note(family: str) -> str:
    """How boxes are written for ``family`` (told to the teacher)."""
    f = family.lower().replace("-", "_").replace(".", "_")
    if f in ("qwen2_5_vl",):
        return "absolute pixel coordinates of the resized model input image"
    return "relative coordinates on a 0-1000 scale (0,0 = top-left, 1000,1000 = bottom-right)"


def teacher_system_prompt(family: str) -> str:
    """The system message: what a TAG trace is and its exact format."""
    return (
        "You are an expert in the Facial Action Coding System (FACS). You explain facial "
        "expressions by inspecting face regions, naming the Action Units (AUs) you see there "
        "and pointing at each with a bounding box. Boxes are [x1,y1,x2,y2] in "
        f"{coordinate_note(family)}.\n"
        "Write exactly this format and nothing else:\n" + _FORMAT
    )


def teacher_user_prompt(
    labels: Sequence[str],
    activated: Sequence[ActivatedEntry],
    *,
    eliminated: Sequence[str] = (),
    au_names: dict[int, str] | None = None,
) -> str:
    """The user text: the AU detector's activated list, the label set and eliminated labels.

    Boxes are given in the model's coordinate space (``ActivatedEntry.model_box``).
    """
    names = au_names or {}
    lines = [
        "Classify the facial expression in the image.",
        "An AU detector reports these activated Action Units (probability; box):",
    ]
    if activated:
        for e in activated:
            x1, y1, x2, y2 = (round(v) for v in e.model_box)
            name = f" {names[e.au]}" if e.au in names else ""
            lines.append(f"- AU{e.au}{name}: p={e.prob:.2f}; [{x1},{y1},{x2},{y2}]")
    else:
        lines.append("- none above threshold (the face may be neutral)")
    lines.append("Possible answers: " + ", ".join(labels) + ".")
    if eliminated:
        lines.append(
            "These answers were already checked and are wrong, do not give them: "
            + ", ".join(eliminated)
            + "."
        )
    lines.append("Verify each AU in its region, then give exactly one answer.")
    return "\n".join(lines)
