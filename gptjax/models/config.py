"""Architecture description shared by GPT-NeoX (Pythia) and Llama (SmolLM2) models.

One dataclass describes both families; the differences are switches (norm type, MLP type,
residual layout, partial rotary, tied unembedding). It is built from a Hugging Face
``config.json`` of either family, in the old (``rotary_pct``, ``rotary_emb_base``) and the
new (``rope_parameters``) spelling, or from GGUF metadata (see gguf_loading.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

ARCHITECTURES = ("gpt_neox", "llama")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_kv_heads: int | None = None  # None: same as num_heads (no grouped-query attention)
    head_dim: int | None = None  # None: hidden_size // num_heads
    rotary_pct: float = 1.0  # share of each head's dims that get rotary embeddings
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    parallel_residual: bool = False  # GPT-NeoX: x + attn(ln1 x) + mlp(ln2 x)
    tie_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unsupported architecture {self.arch!r}; supported: {ARCHITECTURES}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(
                    f"model config: {name} must be positive, got {getattr(self, name)}"
                )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"model config: hidden_size {self.hidden_size} is not divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"model config: num_heads {self.num_heads} is not a multiple of "
                f"num_kv_heads {self.kv_heads}"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"model config: rotary_pct must be in (0, 1], got {self.rotary_pct}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        # Same rounding as the reference: int(head_size * rotary_pct).
        return int(self.dim_per_head * self.rotary_pct)

    def num_params(self) -> int:
        d, h, kv, hd = self.hidden_size, self.num_heads, self.kv_heads, self.dim_per_head
        attn = d * (h + 2 * kv) * hd + h * hd * d
        mlp = (3 if self.arch == "llama" else 2) * d * self.intermediate_size
        embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * (attn + mlp) + embed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"model config: unknown keys {sorted(unknown)}")
        return cls(**d)


def _rope(hf: dict[str, Any]) -> tuple[float, float]:
    """(rotary_pct, rope_theta) from either spelling of a HF config."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"unsupported rope type {rope_type!r} (only 'default' rotary is built)")
    pct = hf.get("rotary_pct", params.get("partial_rotary_factor", hf.get("partial_rotary_factor")))
    theta = hf.get("rotary_emb_base", params.get("rope_theta", hf.get("rope_theta")))
    return float(1.0 if pct is None else pct), float(10000.0 if theta is None else theta)


def from_hf_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Translate a Hugging Face config dict (GPTNeoX or Llama) into a ModelConfig."""
    model_type = hf.get("model_type")
    try:
        pct, theta = _rope(hf)
        if model_type == "gpt_neox":
            act = hf.get("hidden_act", "gelu")
            if act != "gelu":
                raise ValueError(
                    f"{source}: hidden_act {act!r} unsupported for gpt_neox (gelu only)"
                )
            return ModelConfig(
                arch="gpt_neox",
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"],
                num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                rotary_pct=pct,
                rope_theta=theta,
                norm_eps=hf.get("layer_norm_eps", 1e-5),
                parallel_residual=hf.get("use_parallel_residual", True),
                tie_embeddings=hf.get("tie_word_embeddings", False),
                attention_bias=hf.get("attention_bias", True),
                mlp_bias=True,
                max_position_embeddings=hf.get("max_position_embeddings", 2048),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=hf.get("eos_token_id"),
            )
        if model_type == "llama":
            act = hf.get("hidden_act", "silu")
            if act != "silu":
                raise ValueError(f"{source}: hidden_act {act!r} unsupported for llama (silu only)")
            return ModelConfig(
                arch="llama",
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"],
                num_heads=hf["num_attention_heads"],
                num_kv_heads=hf.get("num_key_value_heads"),
                head_dim=hf.get("head_dim"),
                intermediate_size=hf["intermediate_size"],
                rotary_pct=pct,
                rope_theta=theta,
                norm_eps=hf.get("rms_norm_eps", 1e-6),
                parallel_residual=False,
                tie_embeddings=hf.get("tie_word_embeddings", False),
                attention_bias=hf.get("attention_bias", False),
                mlp_bias=hf.get("mlp_bias", False),
                max_position_embeddings=hf.get("max_position_embeddings", 2048),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=hf.get("eos_token_id"),
            )
    except KeyError as err:
        raise ValueError(f"{source}: missing key {err.args[0]!r}") from err
    raise ValueError(f"{source}: unsupported model_type {model_type!r}; supported: gpt_neox, llama")


def load_hf_config(model_dir: str | os.PathLike) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no config.json in {model_dir} (expected a Hugging Face model dir)"
        )
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return from_hf_config(hf, source=str(path))


def pythia_style(
    vocab_size: int = 50304,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    **overrides: Any,
) -> ModelConfig:
    """A GPT-NeoX config shaped like the Pythia family (rotary on 25% of each head)."""
    base = dict(
        arch="gpt_neox",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=4 * hidden_size,
        rotary_pct=0.25,
        parallel_residual=True,
        attention_bias=True,
        mlp_bias=True,
        eos_token_id=0,
        bos_token_id=0,
    )
    base.update(overrides)
    return ModelConfig(**base)


def to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """A transformers config dict (new spelling) describing the same architecture."""
    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=cfg.attention_bias,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
    )
    rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.arch == "gpt_neox":
        if not cfg.mlp_bias:
            raise ValueError("gpt_neox in transformers always has MLP biases")
        rope["partial_rotary_factor"] = cfg.rotary_pct
        return dict(
            common,
            model_type="gpt_neox",
            architectures=["GPTNeoXForCausalLM"],
            hidden_act="gelu",
            layer_norm_eps=cfg.norm_eps,
            use_parallel_residual=cfg.parallel_residual,
            rope_parameters=rope,
        )
    if cfg.rotary_pct != 1.0:
        raise ValueError("llama in transformers rotates whole heads (rotary_pct must be 1.0)")
    return dict(
        common,
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        hidden_act="silu",
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.dim_per_head,
        rms_norm_eps=cfg.norm_eps,
        mlp_bias=cfg.mlp_bias,
        rope_parameters=rope,
    )
