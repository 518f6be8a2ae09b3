"""Filling a model from another format's tensors: a mapping from our parameter paths to the
source tensors that make them up (and how to combine them), shared by the Hugging Face and
GGUF loaders."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.models.config import ModelConfig
from gptjax.models.transformer import Transformer, abstract_model

# A parameter path in our model -> (HF tensor names it is made of, how to combine them).
Mapping = dict[tuple, tuple[tuple[str, ...], Callable[..., np.ndarray]]]


def transpose(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def identity(x: np.ndarray) -> np.ndarray:
    return x


def concat_transpose(*ws: np.ndarray) -> np.ndarray:
    return transpose(np.concatenate(ws, axis=0))


def concat(*bs: np.ndarray) -> np.ndarray:
    return np.concatenate(bs, axis=0)


def build_from_mapping(
    cfg: ModelConfig,
    get_tensor: Callable[[str], np.ndarray],
    source: str,
    mapping: Mapping,
) -> Transformer:
    """Fill an abstract model with converted tensors, checking every shape against it."""
    model = abstract_model(cfg)
    graphdef, state = nnx.split(model)
    flat = dict(state.flat_state())
    missing = sorted(set(flat) - set(mapping), key=str)
    if missing:
        raise ValueError(f"{source}: no mapping for parameters {missing[:5]}")
    values = {}
    for path, (names, convert) in mapping.items():
        tensors = [np.asarray(get_tensor(name), dtype=np.float32) for name in names]
        try:
            value = convert(*tensors)
        except ValueError as err:
            # A reshape inside a converter (fused or permuted heads) fails on a wrong-shaped
            # tensor before the shape check below could name it.
            raise ValueError(
                f"{source}: tensor {' + '.join(names)} has shape "
                f"{tuple(t.shape for t in tensors)}, which does not fit "
                f"{'.'.join(map(str, path))} (expected {tuple(flat[path].value.shape)}): {err}"
            ) from err
        expected = flat[path].value.shape
        if value.shape != tuple(expected):
            raise ValueError(
                f"{source}: tensor {' + '.join(names)} has shape "
                f"{tuple(t.shape for t in tensors)}, which converts to {value.shape}; the "
                f"config implies {tuple(expected)} for {'.'.join(map(str, path))}"
            )
        values[path] = value
    for path, variable in flat.items():
        # Device arrays, not numpy: a jitted call would otherwise copy every param in each time.
        variable.value = jnp.asarray(values[path])
    return nnx.merge(graphdef, state)
