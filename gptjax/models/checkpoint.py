"""Save and restore converted models with Orbax (params) + a JSON ModelConfig beside them."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.io import atomic_write_json, read_json
from gptjax.models.config import ModelConfig
from gptjax.models.transformer import Transformer, abstract_model


def this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for files one process reads or writes on its own (a model dir, its own
    runs' checkpoints): no barriers with the other processes, which are busy elsewhere."""
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process{me}"
    )


def save_model(model: Transformer, directory: str | os.PathLike) -> Path:
    """Write ``directory/config.json`` and ``directory/params`` (Orbax). Overwrites."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    state = jax.device_get(nnx.state(model, nnx.Param))  # host arrays: any process may save
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckptr:
        ckptr.save(directory / "params", state, force=True)
    atomic_write_json(directory / "config.json", model.config.to_dict())
    return directory


def restore_model(directory: str | os.PathLike) -> Transformer:
    directory = Path(directory).expanduser().resolve()
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {directory} (expected a gptjax model dir)")
    cfg = ModelConfig.from_dict(read_json(config_file))
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckptr:
        state = ckptr.restore(directory / "params", abstract_state)
    return nnx.merge(graphdef, state)
