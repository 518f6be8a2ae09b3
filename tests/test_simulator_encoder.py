"""Encoder features: parity with transformers' BertModel, caching, GPT hidden-state pooling."""

import jax.numpy as jnp
import numpy as np
import pytest

from simulator import features as enc

TEXTS = [
    "The movie was great!",
    "a",
    "An utterly boring, overlong and pretentious film that never finds its footing. " * 4,
    "Question: is the sky blue? Answer: yes",
    "Übersetzung: Der Hund läuft schnell über die Straße.",
    "",
]


@pytest.fixture(scope="module")
def minilm():
    from gptjax.paths import minilm_dir

    path = minilm_dir()
    if not (path / "model.safetensors").exists():
        pytest.skip("all-MiniLM-L6-v2 weights not installed")
    return path, enc.load_bert(path)


@pytest.mark.parity
def test_parity_with_transformers_bert(minilm):
    """Features equal transformers' PyTorch BertModel on the real MiniLM weights (≤ 1e-4)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path, pair = minilm
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    ref = transformers.BertModel.from_pretrained(str(path)).eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        out = ref(**batch)
    hidden = out.last_hidden_state.numpy().astype(np.float64)
    mask = batch["attention_mask"].numpy()[..., None]
    want = {
        "mean": (hidden * mask).sum(1) / mask.sum(1),
        "cls": hidden[:, 0],
        "pooler": out.pooler_output.numpy(),
    }
    # Same token ids as the HF tokenizer (our batches are padded differently; ids per text
    # must agree).
    ids, m = enc.tokenize(pair[1], TEXTS, 128)
    for i in range(len(TEXTS)):
        n = int(m[i].sum())
        assert ids[i, :n].tolist() == batch["input_ids"][i, : int(mask[i].sum())].tolist()
    for pooling, expected in want.items():
        got = enc.encode_texts(TEXTS, pooling=pooling, model=pair, batch_size=8)
        err = float(np.abs(got - expected).max())
        print(f"\n{pooling}: max |Δ| = {err:.2e}")
        assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
        assert err <= 1e-4
    normed = enc.encode_texts(TEXTS[:2], model=pair, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-5)


def test_features_are_cached_atomically(minilm, tmp_path, monkeypatch, capsys):
    path, pair = minilm
    calls = []
    real = enc.encode_texts

    def counting(texts, **kw):
        calls.append(len(texts))
        return real(texts, model=pair, **{k: v for k, v in kw.items() if k != "path"})

    monkeypatch.setattr(enc, "encode_texts", counting)
    first = enc.cached_features(tmp_path / "features", TEXTS[:3], pooling="mean")
    again = enc.cached_features(tmp_path / "features", TEXTS[:3], pooling="mean")
    np.testing.assert_array_equal(first, again)
    assert calls == [3]
    enc.cached_features(tmp_path / "features", TEXTS[:3], pooling="cls")  # other settings
    enc.cached_features(tmp_path / "features", TEXTS[:2], pooling="mean")  # other texts
    assert calls == [3, 3, 2]
    files = sorted(p.name for p in tmp_path.iterdir())
    caches = [f for f in files if f.endswith(".npy")]
    assert len(caches) == 3 and all(f.startswith("features.") for f in caches)
    assert sorted(f for f in files if f.endswith(".sha256")) == [f + ".sha256" for f in caches]
    assert not any(f.endswith(".tmp") for f in files)
    # A damaged cache is said so and computed again.
    target = tmp_path / caches[0]
    data = bytearray(target.read_bytes())
    data[-8:] = b"\xff" * 8  # garble the last value: still a loadable .npy
    target.write_bytes(bytes(data))
    capsys.readouterr()
    n_calls = len(calls)
    again = np.load(target)
    assert not np.array_equal(again, first) or not np.isfinite(again).all()
    enc.cached_features(tmp_path / "features", TEXTS[:3], pooling="mean")
    enc.cached_features(tmp_path / "features", TEXTS[:3], pooling="cls")
    enc.cached_features(tmp_path / "features", TEXTS[:2], pooling="mean")
    assert len(calls) == n_calls + 1  # only the damaged one
    assert "computing it again" in capsys.readouterr().out
    # A directory as the cache location works as well.
    (tmp_path / "d").mkdir()
    enc.cached_features(tmp_path / "d", TEXTS[:1])
    assert len(list((tmp_path / "d").glob("features.*.npy"))) == 1


def test_pool_hidden_states_last_and_mean():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(5, 7, 3)).astype(np.float32)
    ids = np.arange(35).reshape(5, 7)
    mask = np.ones((5, 7), np.int32)
    mask[1, 4:] = 0  # right padding: last real token at 3
    mask[2, :2] = 0  # left padding: last real token at 6

    def hidden_fn(input_ids, attention_mask):
        return jnp.asarray(hidden)[np.asarray(input_ids)[:, 0] // 7]

    last = enc.pool_hidden_states(hidden_fn, ids, mask, "last", batch_size=2)
    np.testing.assert_allclose(last[1], hidden[1, 3])
    np.testing.assert_allclose(last[2], hidden[2, 6])
    np.testing.assert_allclose(last[0], hidden[0, 6])
    mean = enc.pool_hidden_states(hidden_fn, ids, mask, "mean", batch_size=3)
    np.testing.assert_allclose(mean[1], hidden[1, :4].mean(0), rtol=1e-5)
    np.testing.assert_allclose(mean[2], hidden[2, 2:].mean(0), rtol=1e-5)
    with pytest.raises(ValueError):
        enc.pool_hidden_states(hidden_fn, ids, mask, "cls")
