"""GGUF loading: tiny files written here (every code path, bad input), and the real 4-bit
SmolLM2-135M-Instruct against transformers loading the same file."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.models.checkpoint import restore_model, save_model
from gptjax.models.config import ModelConfig
from gptjax.models.generate import generate
from gptjax.models.gguf_file import GGUFFile
from gptjax.models.gguf_loading import gguf_config, load_gguf_model
from gptjax.models.gguf_tokenizer import load_gguf_tokenizer
from gptjax.models.hf_loading import iter_hf_tensors
from gptjax.models.transformer import init_model
from gptjax.paths import smollm2_gguf

# ---------------------------------------------------------------------------------------------
# A tiny llama GGUF written the way llama.cpp's converter writes one.

Q = gguf.GGMLQuantizationType


def _byte_tokens() -> list[str]:
    """GPT-2's 256 byte symbols, built independently of the loader's copy."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "Ġan d"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENS = SPECIAL + _byte_tokens() + ["Ġt", "he", "Ġthe", "in", "Ġa", "Ġan", "Ġand"]
TYPES = [3] * len(SPECIAL) + [1] * (len(TOKENS) - len(SPECIAL))
TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_config(tied: bool = True) -> ModelConfig:
    return ModelConfig(
        arch="llama",
        vocab_size=len(TOKENS),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=96,
        rope_theta=500.0,
        norm_eps=1e-5,
        tie_embeddings=tied,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> interleaved pairs.
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _gguf_tensors(model) -> dict[str, np.ndarray]:
    cfg = model.config
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    out = {}
    for hf, w in iter_hf_tensors(model):
        if hf in names:
            out[names[hf]] = w
            continue
        i, rest = hf.split(".")[2], ".".join(hf.split(".")[3:-1])
        if rest == "self_attn.q_proj":
            w = _llama_cpp_permute(w, cfg.num_heads)
        elif rest == "self_attn.k_proj":
            w = _llama_cpp_permute(w, cfg.kv_heads)
        out[f"blk.{i}.{layer[rest]}.weight"] = w
    return out


def write_gguf(
    path: Path,
    model,
    quant: dict[str, Q] | None = None,
    arch: str = "llama",
    tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write model (or the given tensors) as a llama GGUF with a tiny byte-level tokenizer.
    quant: tensor-name suffix -> ggml type (default float32)."""
    cfg = model.config
    tensors = _gguf_tensors(model) if tensors is None else tensors
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.dim_per_head)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types(TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_chat_template(TEMPLATE)
    for name, value in tensors.items():
        qtype = next((t for suffix, t in (quant or {}).items() if name.endswith(suffix)), None)
        value = np.ascontiguousarray(value, dtype=np.float32)
        if qtype is None:
            w.add_tensor(name, value)
        else:
            w.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _params(model) -> dict:
    return {k: np.asarray(v.value) for k, v in nnx.state(model, nnx.Param).flat_state()}


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, ids):
    model = nnx.merge(graphdef, state)
    hidden, _ = model(ids)
    return model.unembed(hidden)


def _logits(model, ids) -> np.ndarray:
    """Logits [len(ids), V], jitted on ids right-padded to a multiple of 32 (one compile per
    model for short texts; causal attention keeps the padding out of the real positions)."""
    width = -(-len(ids) // 32) * 32
    padded = np.zeros((1, width), np.int32)
    padded[0, : len(ids)] = ids
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, jnp.asarray(padded)))[0, : len(ids)]


@pytest.mark.parametrize("tied", [True, False])
def test_float_gguf_round_trips_exactly(tmp_path, tied):
    model = init_model(tiny_config(tied), seed=1)
    path = write_gguf(tmp_path / "tiny.gguf", model)
    # GGUF stores the epsilon as float32.
    assert gguf_config(path) == dataclasses.replace(model.config, norm_eps=float(np.float32(1e-5)))
    loaded = load_gguf_model(path)
    want, got = _params(model), _params(loaded)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=str(k))


def test_quantized_gguf_dequantises(tmp_path):
    model = init_model(tiny_config(tied=False), seed=2)
    quant = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q8_0, "ffn_up.weight": Q.Q4_1}
    loaded = load_gguf_model(write_gguf(tmp_path / "q.gguf", model, quant))
    want, got = _params(model), _params(loaded)
    for k in want:
        # 4-bit blocks of 32 std-0.02 weights: step (max - min) / 15 ~ 0.01, error <= step / 2.
        tol = 0.01 if k[-2] in ("qkv", "up") else 0.0
        np.testing.assert_allclose(got[k], want[k], atol=tol, rtol=0, err_msg=str(k))
    q_rows = np.asarray(loaded.layers[0].attn.qkv.kernel.value)[:, :64]
    assert 0 < np.abs(q_rows - want[("layers", 0, "attn", "qkv", "kernel")][:, :64]).max()


def test_converted_params_save_and_restore_with_orbax(tmp_path):
    loaded = load_gguf_model(write_gguf(tmp_path / "t.gguf", init_model(tiny_config(), seed=3)))
    restored = restore_model(save_model(loaded, tmp_path / "ckpt"))
    assert restored.config == loaded.config
    for k, v in _params(loaded).items():
        np.testing.assert_array_equal(_params(restored)[k], v)
    ids = [5, 70, 3, 99, 100]
    np.testing.assert_array_equal(_logits(restored, ids), _logits(loaded, ids))


def test_tiny_tokenizer(tmp_path):
    tok = load_gguf_tokenizer(write_gguf(tmp_path / "t.gguf", init_model(tiny_config(), seed=0)))
    ids = tok.encode("in the sand<|im_end|>")
    assert tok.backend.id_to_token(ids[1]) == "Ġthe"
    assert ids[-1] == 2 and tok.eos_id == 2 and tok.pad_id == 2 and tok.bos_id == 1
    assert tok.decode(ids) == "in the sand"
    assert tok.decode(ids, skip_special_tokens=False) == "in the sand<|im_end|>"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode_chat([{"role": "user", "content": "hi"}])[0] == 1


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the file, and the tensor or key at fault.


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_gguf_model(tmp_path / "absent.gguf")
    with pytest.raises(FileNotFoundError, match="HuggingFaceTB/SmolLM2-135M"):
        load_gguf_model("HuggingFaceTB/SmolLM2-135M")  # a hub id is not a local file


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", "truncated"])
def test_malformed_file_names_the_file(tmp_path, content):
    path = tmp_path / "bad.gguf"
    if content == "truncated":
        good = write_gguf(tmp_path / "good.gguf", init_model(tiny_config(), seed=0))
        content = good.read_bytes()[:3000]  # cut inside the metadata
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.gguf: not a readable GGUF file"):
        load_gguf_model(path)


def test_truncated_tensor_data_names_the_file(tmp_path):
    good = write_gguf(tmp_path / "good.gguf", init_model(tiny_config(), seed=0))
    path = tmp_path / "cut.gguf"
    path.write_bytes(good.read_bytes()[:-5000])  # the last tensors lose their data
    with pytest.raises(ValueError, match="cut.gguf"):
        load_gguf_model(path)


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "g.gguf", init_model(tiny_config(), seed=0), arch="gpt2")
    with pytest.raises(ValueError, match=r"g.gguf: unsupported architecture 'gpt2'"):
        load_gguf_model(path)


def test_wrong_shape_names_file_and_tensor(tmp_path):
    model = init_model(tiny_config(), seed=0)
    tensors = _gguf_tensors(model)
    tensors["blk.1.ffn_down.weight"] = tensors["blk.1.ffn_down.weight"][:, :64]
    path = write_gguf(tmp_path / "shape.gguf", model, tensors=tensors)
    with pytest.raises(ValueError, match=r"shape.gguf: tensor blk.1.ffn_down.weight has shape"):
        load_gguf_model(path)
    # A shape that breaks the Q/K un-permutation itself is caught and named too.
    tensors = _gguf_tensors(model)
    tensors["blk.0.attn_k.weight"] = tensors["blk.0.attn_k.weight"][:30]
    path = write_gguf(tmp_path / "perm.gguf", model, tensors=tensors)
    with pytest.raises(ValueError, match=r"perm.gguf: tensor .*blk.0.attn_k.weight"):
        load_gguf_model(path)


def test_missing_and_unexpected_tensors(tmp_path):
    model = init_model(tiny_config(), seed=0)
    tensors = _gguf_tensors(model)
    del tensors["blk.0.attn_v.weight"]
    path = write_gguf(tmp_path / "miss.gguf", model, tensors=tensors)
    with pytest.raises(ValueError, match=r"miss.gguf: tensor 'blk.0.attn_v.weight' is missing"):
        load_gguf_model(path)
    tensors = dict(_gguf_tensors(model), **{"blk.0.attn_q.bias": np.zeros(64, np.float32)})
    path = write_gguf(tmp_path / "extra.gguf", model, tensors=tensors)
    with pytest.raises(ValueError, match=r"extra.gguf: tensors \['blk.0.attn_q.bias'\]"):
        load_gguf_model(path)


# ---------------------------------------------------------------------------------------------
# The real file: SmolLM2-135M-Instruct, 4-bit (Q4_1 blocks, Q8_0 embedding).


@functools.cache
def _smol_file() -> GGUFFile:
    path = smollm2_gguf()
    if not path.is_file():
        pytest.skip(f"SmolLM2 GGUF not installed ({path})")
    return GGUFFile(path)


@functools.cache
def _smol():
    f = _smol_file()
    return load_gguf_model(f), load_gguf_tokenizer(f)


FLUENT = "The children walked to school in the morning because the bus was late again."


def _perplexity(model, ids: list[int]) -> float:
    logits = _logits(model, ids).astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(nll.mean()))


def test_smollm2_config_and_tokenizer():
    model, tok = _smol()
    cfg = model.config
    assert (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.kv_heads) == (
        "llama",
        30,
        576,
        9,
        3,
    )
    assert cfg.vocab_size == 49152 and cfg.tie_embeddings and cfg.rope_theta == 100000.0
    assert tok.vocab_size == 49152
    assert (tok.eos_id, tok.bos_id) == (2, 1)
    assert tok.backend.id_to_token(tok.eos_id) == "<|im_end|>"
    ids = tok.encode_chat([{"role": "user", "content": "Hi!"}])
    assert ids[0] == 1 and ids.count(2) == 2  # system + user turns end with <|im_end|>
    text = "Café déjà vu: 3.14159 + naïve résumé → ok"
    assert tok.decode(tok.encode(text)) == text


def test_smollm2_fluent_text_is_far_likelier_than_shuffled():
    model, tok = _smol()
    words = FLUENT.split()
    shuffled = " ".join(np.random.default_rng(0).permutation(words).tolist())
    assert shuffled != FLUENT
    fluent_ppl = _perplexity(model, tok.encode(FLUENT))
    shuffled_ppl = _perplexity(model, tok.encode(shuffled))
    print(f"perplexity fluent {fluent_ppl:.1f}, shuffled {shuffled_ppl:.1f}")
    assert shuffled_ppl >= 10 * fluent_ppl


# ---------------------------------------------------------------------------------------------
# Against transformers loading the same GGUF (it dequantises the blocks itself).

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea, there lived",
]


@functools.cache
def _reference_model():
    pytest.importorskip("accelerate")  # transformers needs it to load GGUF weights
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    return model.eval()


@functools.cache
def _reference_tokenizer():
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    return AutoTokenizer.from_pretrained(
        str(path.parent), gguf_file=path.name, local_files_only=True
    )


TOKENIZER_TEXTS = [
    "Hello world!",
    "  leading spaces, trailing  \n\n\ttabs\t",
    "Numbers: 2024, 3.14159, 1,000,000 and 0x1F.",
    "Unicode: café, naïve, Straße, 東京, 😀👍🏽, русский текст.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Special<|endoftext|>in the middle<|im_end|>and <jupyter_code> tokens",
    "def f(x):\n    return x ** 2  # square\n",
    "I'm sure they'll've done it, won't they? 'Quoted' \"text\".",
    FLUENT,
]


@pytest.mark.parity
def test_tiny_quantized_gguf_matches_transformers(tmp_path):
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = init_model(tiny_config(tied=False), seed=4)
    quant = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_1, "ffn_down.weight": Q.Q8_0}
    write_gguf(tmp_path / "tiny.gguf", model, quant)
    ref = AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="tiny.gguf", dtype=torch.float32, local_files_only=True
    ).eval()
    ours = load_gguf_model(tmp_path / "tiny.gguf")
    ids = [3, 80, 17, 260, 9, 44, 101, 2]
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(_logits(ours, ids), want, atol=1e-4, rtol=0)


@pytest.mark.parity
def test_smollm2_tokenizer_matches_transformers():
    _, tok = _smol()
    ref = _reference_tokenizer()
    for text in TOKENIZER_TEXTS:
        ids = tok.encode(text)
        assert ids == ref(text, add_special_tokens=False).input_ids, text
        assert ids == ref(text).input_ids, text  # the GGUF asks for no BOS either
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
    chats = [
        [{"role": "user", "content": "Hi there"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
    ]
    for messages in chats:
        want = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.apply_chat_template(messages) == want
        assert tok.encode_chat(messages) == ref(want, add_special_tokens=False).input_ids


@pytest.mark.parity
@pytest.mark.slow
def test_smollm2_logits_and_greedy_generation_match_transformers():
    import torch

    model, tok = _smol()
    ref = _reference_model()
    prompts = [tok.encode(p) for p in PROMPTS]
    worst = 0.0
    for ids in prompts:
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits[0].numpy()
        worst = max(worst, float(np.abs(_logits(model, ids) - want).max()))
    print(f"max |logit difference| vs transformers: {worst:.2e}")
    assert worst <= 1e-3

    # Greedy, 20 new tokens: ours batched (left-padded, KV cache), transformers one by one.
    ours = generate(model, prompts, 20, eos_id=tok.eos_id, pad_id=tok.pad_id).as_lists()
    for ids, got in zip(prompts, ours, strict=True):
        with torch.no_grad():
            out = ref.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=tok.eos_id,
                pad_token_id=tok.pad_id,
            )
        want = out[0, len(ids) :].tolist()
        print(repr(tok.decode(got)))
        assert got == want
        assert len(got) == 20


@pytest.mark.slow
def test_smollm2_converted_params_save_and_restore(tmp_path):
    model, tok = _smol()
    restored = restore_model(save_model(model, tmp_path / "smol"))
    ids = tok.encode(PROMPTS[0])
    np.testing.assert_array_equal(_logits(restored, ids), _logits(model, ids))


def test_gguf_file_reports_metadata():
    f = _smol_file()
    assert f.get("general.architecture") == "llama"
    assert f.get("no.such.key", None) is None
    with pytest.raises(ValueError, match=r"SmolLM2-135M-Instruct.Q4_1.gguf: metadata key 'x'"):
        f.get("x")
    with pytest.raises(ValueError, match=r"tensor 'nope' is missing"):
        f.tensor("nope")
    assert f.tensor("blk.0.attn_q.weight").shape == (576, 576)
    assert np.isfinite(f.tensor("token_embd.weight")).all()


def test_load_model_dispatches_by_source(tmp_path):
    from gptjax.models import GGUFTokenizer, load_model, save_hf_model

    model = init_model(tiny_config(), seed=5)
    path = write_gguf(tmp_path / "m.gguf", model)
    loaded, tok = load_model("gguf", path)
    assert isinstance(tok, GGUFTokenizer) and tok.eos_id == 2
    ids = [7, 8, 9]
    np.testing.assert_array_equal(_logits(loaded, ids), _logits(model, ids))
    # An HF dir, with the GGUF's tokenizer saved beside it as tokenizer.json.
    save_hf_model(loaded, tmp_path / "hf")
    tok.backend.save(str(tmp_path / "hf" / "tokenizer.json"))
    hf_model, hf_tok = load_model("hf", tmp_path / "hf")
    assert hf_tok.encode("in the sand") == tok.encode("in the sand")
    np.testing.assert_allclose(_logits(hf_model, ids), _logits(model, ids), atol=1e-6)
    # A gptjax (Orbax) dir, with an explicit tokenizer.
    save_model(loaded, tmp_path / "ours")
    ours, _ = load_model("gptjax", tmp_path / "ours", tokenizer=tmp_path / "hf")
    np.testing.assert_array_equal(_logits(ours, ids), _logits(model, ids))
    with pytest.raises(ValueError, match="unknown model source 'onnx'"):
        load_model("onnx", path)


def test_smollm2_gguf_path_from_the_environment(monkeypatch, tmp_path):
    # A copy named by $GPTJAX_SMOLLM2_GGUF wins over the package's file (the GPU check's route).
    from gptjax import paths

    copy = tmp_path / "smollm2.gguf"
    monkeypatch.setenv(paths.SMOLLM2_ENV, str(copy))
    assert smollm2_gguf() == copy
    monkeypatch.delenv(paths.SMOLLM2_ENV)
    assert smollm2_gguf() != copy
