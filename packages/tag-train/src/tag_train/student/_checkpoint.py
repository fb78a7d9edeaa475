"""Orbax checkpoints of a student: model and optimizer state plus the training progress.

Layout of a student folder::

    student.json         the StudentConfig (architecture, labels, activated-list settings)
    tag_settings.json    family, labels, label space (read by tag-eval)
    checkpoints/<step>/  orbax: model (params), optimizer (optax state), progress (JSON)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from tag_train.student._model import StudentConfig, StudentNet, abstract_student

__all__ = [
    "CONFIG_NAME",
    "checkpoint_manager",
    "read_config",
    "restore_model",
    "restore_training",
    "save_training",
    "write_config",
]

CONFIG_NAME = "student.json"
_CKPT = "checkpoints"


def write_config(out: str | os.PathLike[str], config: StudentConfig, **extra: Any) -> None:
    """Write ``student.json`` (the config, plus ``extra`` under ``"training"``)."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    body = {"config": config.to_dict(), **({"training": extra} if extra else {})}
    tmp = path / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path / CONFIG_NAME)


def read_config(folder: str | os.PathLike[str]) -> StudentConfig:
    """The :class:`StudentConfig` in ``folder/student.json``.

    Raises:
        FileNotFoundError: no ``student.json`` there (not a student folder).
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {CONFIG_NAME}; not a student folder (train one with `tag-train distill`)"
        )
    return StudentConfig.from_dict(json.loads(path.read_text())["config"])


def checkpoint_manager(
    folder: str | os.PathLike[str], *, max_to_keep: int | None = None
) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` on ``folder/checkpoints`` (synchronous saves, so that a
    step reported saved is on disk)."""
    return ocp.CheckpointManager(
        Path(folder).resolve() / _CKPT,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        ),
    )


def save_training(
    mngr: ocp.CheckpointManager,
    step: int,
    model: StudentNet,
    optimizer: nnx.Optimizer,
    progress: dict[str, Any],
) -> None:
    """Save the model, the optimizer and ``progress`` (JSON) as checkpoint ``step``."""
    mngr.save(
        step,
        args=ocp.args.Composite(
            model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model, nnx.Param))),
            optimizer=ocp.args.StandardSave(_opt_pure(optimizer)),
            progress=ocp.args.JsonSave(progress),
        ),
    )
    mngr.wait_until_finished()


def _opt_pure(optimizer: nnx.Optimizer) -> Any:
    """The optimizer state as a pure pytree with string keys (orbax stores keys as strings)."""
    return _str_keys(nnx.to_pure_dict(nnx.state(optimizer)))


def _str_keys(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _like(pure: Any, template: Any) -> Any:
    """``pure`` (string keys) with the key types of ``template`` (int keys come back)."""
    if isinstance(template, dict):
        return {k: _like(pure[str(k)], v) for k, v in template.items()}
    return pure


def restore_training(
    mngr: ocp.CheckpointManager, model: StudentNet, optimizer: nnx.Optimizer
) -> dict[str, Any] | None:
    """Load the latest checkpoint into ``model`` and ``optimizer``; returns its progress
    (``None`` when there is no checkpoint)."""
    step = mngr.latest_step()
    if step is None:
        return None
    m_state = nnx.state(model, nnx.Param)
    o_state = nnx.state(optimizer)
    m_pure = nnx.to_pure_dict(m_state)
    o_pure = nnx.to_pure_dict(o_state)
    got = mngr.restore(
        step,
        args=ocp.args.Composite(
            model=ocp.args.StandardRestore(m_pure),
            optimizer=ocp.args.StandardRestore(_str_keys(o_pure)),
            progress=ocp.args.JsonRestore(),
        ),
    )
    nnx.replace_by_pure_dict(m_state, got["model"])
    nnx.replace_by_pure_dict(o_state, _like(got["optimizer"], o_pure))
    nnx.update(model, m_state)
    nnx.update(optimizer, o_state)
    return dict(got["progress"])


def restore_model(folder: str | os.PathLike[str], step: int | None = None) -> StudentNet:
    """The student in ``folder`` with the weights of checkpoint ``step`` (default: latest).

    Raises:
        FileNotFoundError: no ``student.json`` or no checkpoint.
    """
    config = read_config(folder)
    graphdef, params, rest = nnx.split(abstract_student(config), nnx.Param, ...)
    mngr = checkpoint_manager(folder)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{folder}: no checkpoint under {Path(folder) / _CKPT}")
    got = mngr.restore(
        step,
        args=ocp.args.Composite(model=ocp.args.StandardRestore(nnx.to_pure_dict(params))),
    )
    mngr.close()
    nnx.replace_by_pure_dict(params, got["model"])
    return nnx.merge(graphdef, params, rest)
