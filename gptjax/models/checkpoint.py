"""Save and restore converted models with Orbax (params) + a JSON ModelConfig beside them, and
a digest of the parameter files (Orbax's own files carry none) so that a damaged model
directory is named instead of loaded."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.io import atomic_write_json, read_json, tree_digest
from gptjax.models.config import ModelConfig
from gptjax.models.transformer import Transformer, abstract_model


def this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for files one process reads or writes on its own (a model dir, its own
    runs' checkpoints): no barriers with the other processes, which are busy elsewhere."""
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process{me}"
    )


PARAMS_DIGEST = "params.sha256.json"


def save_model(model: Transformer, directory: str | os.PathLike) -> Path:
    """Write ``directory/params`` (Orbax), its digest, then ``directory/config.json`` (last:
    its presence says the rest is complete). Overwrites."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").unlink(missing_ok=True)  # incomplete until rewritten
    state = jax.device_get(nnx.state(model, nnx.Param))  # host arrays: any process may save
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckptr:
        ckptr.save(directory / "params", state, force=True)
    atomic_write_json(directory / PARAMS_DIGEST, {"params": tree_digest(directory / "params")})
    atomic_write_json(directory / "config.json", model.config.to_dict())
    return directory


def restore_model(directory: str | os.PathLike) -> Transformer:
    directory = Path(directory).expanduser().resolve()
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {directory} (expected a gptjax model dir)")
    cfg = ModelConfig.from_dict(read_json(config_file))
    digest_file = directory / PARAMS_DIGEST
    # Model directories written before the digest existed have none; they load unchecked.
    if digest_file.is_file() and read_json(digest_file).get("params") != tree_digest(
        directory / "params"
    ):
        raise ValueError(
            f"{directory}: the parameter files differ from their digest ({PARAMS_DIGEST}); "
            "the model directory is damaged: delete it to have it built again"
        )
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckptr:
        state = ckptr.restore(directory / "params", abstract_state)
    return nnx.merge(graphdef, state)
