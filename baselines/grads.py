"""Inner products of per-example gradients of the target-token loss, in JAX.

For two examples z, z' and parameters θ, :class:`GradientEngine` computes ⟨∇ℓ(z; θ), ∇ℓ(z'; θ)⟩
for every (training, test) pair, and ‖∇ℓ(z; θ)‖² for self-influence. ℓ is the per-example
loss of the fine-tuning objective (mean cross-entropy over the example's target tokens, as in
``gptjax.models.losses.per_example_loss``).

How a gradient is represented ("features" of an example, computed in jitted, vmapped chunks):

* **explicit**: ``jax.vmap(jax.grad(ℓ))`` gives each example's gradient of a parameter leaf;
  the leaves are flattened and concatenated, and pairs are scored by one matrix product.
* **factorised**: a dense layer y_p = x_p W (+ b) applied at positions p has the per-example
  kernel gradient Σ_p x_p ⊗ g_p (g_p = ∂ℓ/∂y_p), so
  ⟨∇_W ℓ, ∇_W ℓ'⟩ = Σ_{p,q} (x_p·x'_q)(g_p·g'_q)
  without forming either gradient. The activations x_p are recorded in the forward pass and
  g_p is the gradient of ℓ with respect to a zero perturbation added to the layer's output.
  Used for the vocabulary-sized matrices (the embedding, whose "activation" is a one-hot
  token, and the unembedding, applied only at the S target positions), where it replaces a
  [V, D] gradient by O(L·D + S·V) numbers, and optionally for every dense kernel in the
  blocks (cheap only when sequences are short: the cost is O(L²·(d_in + d_out)) per pair).
  With tied embeddings the table's gradient is the sum of its embedding and unembedding
  parts, and the cross terms between them are included.
* **projected** (optional): every leaf's gradient G (seen as [a, b]) is mapped to the
  d = r·k² numbers (R₁ⱼᵀ G R₂ⱼ)ⱼ with Gaussian blocks R₁ⱼ [a, k], R₂ⱼ [b, k], j = 1..r (a
  Johnson-Lindenstrauss projection with Kronecker-structured blocks, unbiased for inner
  products), and the leaves' images are summed into one d-vector per example; 1-D leaves use
  a dense Gaussian [a, d]. For a factorised layer R₁ᵀ(Σ_p x_p g_pᵀ)R₂ = (X R₁)ᵀ(G R₂), so no
  gradient is formed there either. Matrices come from ``jax.random`` keyed by the parameter's
  path, so the explicit and the factorised route project identically.

``layers="last"`` restricts the gradient to the unembedding matrix as used by the output head
(what Captum's TracInCPFast computes); with tied embeddings it is the head's part only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gptjax.collect.runner import cached_residuals
from gptjax.collect.train_step import RESIDUAL
from gptjax.models.losses import masked_token_mean
from gptjax.models.transformer import is_trained
from gptjax.tasks.tokenize import TOKEN_FIELDS

LAYERS = ("all", "last")
FACTORIZE = ("none", "vocab", "all")

Batch = dict[str, np.ndarray]

# Observer of a GradientEngine's compiled calls: (name, jitted function, positional args).
Recorder = Callable[[str, Any, tuple[Any, ...]], None]


@dataclasses.dataclass(frozen=True)
class GradConfig:
    """How gradients are taken and compared.

    layers: "all" parameters, or "last" (the unembedding as used by the head only).
    factorize: "none" (explicit vmap-grad for every leaf), "vocab" (factorise the embedding and
        unembedding, explicit for the blocks), "all" (also every dense kernel in the blocks).
    projection_dim: 0 for exact inner products, else project every gradient to this many
        dimensions.
    projection_block: side k of the Kronecker blocks of the projection of matrix leaves
        (k² must divide projection_dim); 0 picks the smallest k whose matrices stay under
        64 MB per leaf. Small k: low variance; large k: cheap for explicit gradients.
    memory_budget_mb: working memory to size chunks by (features of the held side included).
    chunk_size: examples per vmapped chunk; 0 to derive it from the budget.
    """

    layers: str = "all"
    factorize: str = "vocab"
    projection_dim: int = 0
    projection_block: int = 0
    seed: int = 0
    memory_budget_mb: float = 2048.0
    chunk_size: int = 0

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}, got {self.layers!r}")
        if self.factorize not in FACTORIZE:
            raise ValueError(f"factorize must be one of {FACTORIZE}, got {self.factorize!r}")
        if self.projection_dim < 0 or self.chunk_size < 0 or self.memory_budget_mb <= 0:
            raise ValueError(
                "projection_dim and chunk_size must be >= 0 and memory_budget_mb > 0, got "
                f"{self.projection_dim}, {self.chunk_size}, {self.memory_budget_mb}"
            )


# --------------------------------------------------------------------------- token batches


def as_batch(batch: Any) -> Batch:
    """The five token arrays of a batch given as a mapping or an object with attributes."""
    out = {}
    for name in TOKEN_FIELDS:
        try:
            value = batch[name] if isinstance(batch, Mapping) else getattr(batch, name)
        except (KeyError, AttributeError) as err:
            raise ValueError(f"token batch has no field {name!r} (needs {TOKEN_FIELDS})") from err
        dtype = np.float32 if name == "target_mask" else np.int32
        out[name] = np.asarray(value, dtype=dtype)
    m, length = out["input_ids"].shape
    residual = batch.get(RESIDUAL) if isinstance(batch, Mapping) else getattr(batch, RESIDUAL, None)
    if residual is not None:
        out[RESIDUAL] = np.asarray(residual, np.float32)
        if out[RESIDUAL].shape[:2] != (m, length):
            raise ValueError(f"{RESIDUAL} {out[RESIDUAL].shape} != input_ids {(m, length)}")
    if out["attention_mask"].shape != (m, length):
        raise ValueError(
            f"attention_mask {out['attention_mask'].shape} != input_ids {out['input_ids'].shape}"
        )
    s = out["target_pos"].shape
    if len(s) != 2 or s[0] != m or out["target_ids"].shape != s or out["target_mask"].shape != s:
        raise ValueError(
            "target_pos, target_ids and target_mask must all be [M, S] with M = "
            f"{m}; got {s}, {out['target_ids'].shape}, {out['target_mask'].shape}"
        )
    if s[1] and (out["target_pos"].min() < 0 or out["target_pos"].max() >= length):
        raise ValueError(f"target_pos outside 0..{length - 1}")
    return out


def take(batch: Batch, ids: Sequence[int] | np.ndarray) -> Batch:
    """Rows ``ids`` of every array of a batch."""
    ids = np.asarray(ids, dtype=np.int64)
    return {k: v[ids] for k, v in batch.items()}


def num_examples(batch: Batch) -> int:
    return int(batch["input_ids"].shape[0])


# --------------------------------------------------------------------------- parameter leaves


def _key_name(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def leaf_paths(state: Any) -> tuple[list[tuple], list[jax.Array], Any]:
    """(paths, leaves, treedef) of a parameter state; paths drop the trailing ``.value``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths = []
    for path, _ in flat:
        names = tuple(_key_name(k) for k in path)
        if names and names[-1] == "value":
            names = names[:-1]
        paths.append(names)
    return paths, [leaf for _, leaf in flat], treedef


def _get_path(obj: Any, path: Sequence[Any]) -> Any:
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


def _set_path(obj: Any, path: Sequence[Any], value: Any) -> None:
    parent = _get_path(obj, path[:-1])
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


class _LinearTap:
    """Stands in for an nnx.Linear of a one-example forward pass: the same output plus a zero
    perturbation eps [tokens, d_out]; records the input as [tokens, d_in]. Works whether the
    model calls the layer on [1, L, d] or on [L, d]."""

    def __init__(self, linear: nnx.Linear, eps: jax.Array, record: dict, name: str):
        self.linear, self.eps, self.record, self.name = linear, eps, record, name

    def __call__(self, x: jax.Array) -> jax.Array:
        self.record[self.name] = x.reshape(-1, x.shape[-1])
        out = self.linear(x)
        return out + self.eps.reshape(out.shape)


class _EmbedTap:
    """Stands in for the nnx.Embed: optional perturbation of the looked-up rows, optional
    stop-gradient on the table (so only the head's use of a tied table is differentiated)."""

    def __init__(self, embed: nnx.Embed, eps: jax.Array | None, stop: bool):
        self.embed, self.eps, self.stop = embed, eps, stop

    def __call__(self, tokens: jax.Array) -> jax.Array:
        table = self.embed.embedding[...]
        if self.stop:
            table = jax.lax.stop_gradient(table)
        out = jnp.take(table, tokens, axis=0)
        return out if self.eps is None else out + self.eps.reshape(out.shape)

    def attend(self, query: jax.Array) -> jax.Array:
        return self.embed.attend(query)


def _block_sides(d: int) -> list[int]:
    """Block sides k with k² dividing d, smallest first."""
    return [k for k in range(1, math.isqrt(d) + 1) if d % (k * k) == 0]


def _project_outer(xr: jax.Array, gr: jax.Array) -> jax.Array:
    """Projection of Σ_p x_p ⊗ g_p from the projected factors xr [P, r, k], gr [P, r, k]."""
    return jnp.einsum("pju,pjv->juv", xr, gr).reshape(-1)


@dataclasses.dataclass(frozen=True)
class _Plan:
    explicit: tuple[int, ...]  # leaf indices differentiated explicitly
    dense: tuple[tuple, ...]  # module paths of factorised nnx.Linear layers
    dense_shapes: tuple[tuple[int, int], ...]
    embed_tap: bool  # factorise the embedding lookup
    embed_stop: bool  # stop-gradient the table in the lookup (last-layer, explicit, tied)
    head_tap: bool  # factorise the unembedding
    tied: bool
    vocab: int
    hidden: int
    table_path: tuple
    head_path: tuple | None
    first_layer: int = 0  # > 0: only blocks first_layer.. and the final norm are trained


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Everything static about a feature computation (hashable: jitted functions are shared
    by engines of the same model structure and configuration)."""

    graphdef: Any
    treedef: Any
    plan: _Plan
    projection_dim: int


def _loss(spec, explicit, eps, leaves, ex):
    plan = spec.plan
    leaves = list(leaves)
    for i, value in zip(plan.explicit, explicit, strict=True):
        leaves[i] = value
    model = nnx.merge(spec.graphdef, jax.tree_util.tree_unflatten(spec.treedef, leaves))
    record: dict[str, jax.Array] = {}
    for k, path in enumerate(plan.dense):
        name = f"dense{k}"
        _set_path(model, path, _LinearTap(_get_path(model, path), eps[name], record, name))
    if plan.embed_tap or plan.embed_stop:
        model.embed = _EmbedTap(model.embed, eps.get("embed"), plan.embed_stop)
    if plan.first_layer:  # partial fine-tuning: from the cached output of the frozen blocks
        hidden = model.forward_from(
            ex[RESIDUAL][None], plan.first_layer, ex["attention_mask"][None]
        )
    else:
        hidden, _ = model(ex["input_ids"][None], attention_mask=ex["attention_mask"][None])
    h = hidden[0][ex["target_pos"]]  # [S, D]
    logits = model.unembed(h).astype(jnp.float32)
    if plan.head_tap:
        logits = logits + eps["head"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, ex["target_ids"])
    return masked_token_mean(ce, ex["target_mask"]), (record, h)


def _example_features(spec, leaves, proj, ex):
    plan = spec.plan
    length, s = ex["input_ids"].shape[0], ex["target_pos"].shape[0]
    eps = {
        f"dense{k}": jnp.zeros((length, shape[1]), jnp.float32)
        for k, shape in enumerate(plan.dense_shapes)
    }
    if plan.embed_tap:
        eps["embed"] = jnp.zeros((length, plan.hidden), jnp.float32)
    if plan.head_tap:
        eps["head"] = jnp.zeros((s, plan.vocab), jnp.float32)
    explicit = [leaves[i] for i in plan.explicit]
    (g_explicit, g_eps), (record, h) = jax.grad(_loss, argnums=(1, 2), has_aux=True)(
        spec, explicit, eps, leaves, ex
    )
    feats: dict[str, Any] = {}
    dense = [(record[f"dense{k}"], g_eps[f"dense{k}"]) for k in range(len(plan.dense))]
    embed = (ex["input_ids"], g_eps["embed"]) if plan.embed_tap else None
    head = (h, g_eps["head"]) if plan.head_tap else None
    if proj is None:
        if g_explicit:
            feats["flat"] = jnp.concatenate([g.reshape(-1) for g in g_explicit])
        feats["dense"] = dense
        if embed is not None:
            feats["embed"] = embed
        if head is not None:
            feats["head"] = head
        return feats
    vec = jnp.zeros((spec.projection_dim,), jnp.float32)
    for g, r in zip(g_explicit, proj["explicit"], strict=True):
        if len(r) == 1:
            vec = vec + g.reshape(-1) @ r[0]
        else:
            r1, r2 = r
            right = jnp.einsum("il,ljv->ijv", g.reshape(r1.shape[0], -1), r2)
            vec = vec + jnp.einsum("iju,ijv->juv", r1, right).reshape(-1)
    mul = lambda x, r: jnp.einsum("pi,ijk->pjk", x, r)
    for (x, g), (r1, r2) in zip(dense, proj["dense"], strict=True):
        vec = vec + _project_outer(mul(x, r1), mul(g, r2))
    if embed is not None:  # table [V, D]: Σ_p e_tok ⊗ dx_p
        r1, r2 = proj["table"]
        vec = vec + _project_outer(r1[embed[0]], mul(embed[1], r2))
    if head is not None:
        hs, gl = head
        if plan.tied:  # table [V, D]: Σ_s g_s ⊗ h_s
            r1, r2 = proj["table"]
            vec = vec + _project_outer(mul(gl, r1), mul(hs, r2))
        else:  # kernel [D, V]: Σ_s h_s ⊗ g_s
            r1, r2 = proj["head"]
            vec = vec + _project_outer(mul(hs, r1), mul(gl, r2))
    feats["proj"] = vec
    return feats


@functools.partial(jax.jit, static_argnums=0)
def _chunk_features(spec, leaves, proj, chunk):
    fn = functools.partial(_example_features, spec)
    return jax.vmap(fn, in_axes=(None, None, 0))(leaves, proj, chunk)


@functools.partial(jax.jit, static_argnums=0)
def _pair(spec, f1, f2):
    """[n1, n2] gradient inner products between two chunks of features."""
    out = 0.0
    if "proj" in f1:
        out = out + f1["proj"] @ f2["proj"].T
    if "flat" in f1:
        out = out + f1["flat"] @ f2["flat"].T
    for (x1, g1), (x2, g2) in zip(f1.get("dense", []), f2.get("dense", []), strict=True):
        kx = jnp.einsum("apd,bqd->abpq", x1, x2)
        kg = jnp.einsum("ape,bqe->abpq", g1, g2)
        out = out + jnp.einsum("abpq,abpq->ab", kx, kg)
    if "embed" in f1:
        (t1, dx1), (t2, dx2) = f1["embed"], f2["embed"]
        same = t1[:, None, :, None] == t2[None, :, None, :]
        kd = jnp.einsum("apd,bqd->abpq", dx1, dx2)
        out = out + jnp.where(same, kd, 0.0).sum((2, 3))
    if "head" in f1:
        (h1, g1), (h2, g2) = f1["head"], f2["head"]
        kh = jnp.einsum("asd,btd->abst", h1, h2)
        kg = jnp.einsum("asv,btv->abst", g1, g2)
        out = out + jnp.einsum("abst,abst->ab", kh, kg)
    if "embed" in f1 and "head" in f1 and spec.plan.tied:
        # <embedding part of 1, head part of 2> = Σ_{p,s} g2_s[tok1_p] (dx1_p · h2_s)
        (t1, dx1), (t2, dx2) = f1["embed"], f2["embed"]
        (h1, g1), (h2, g2) = f1["head"], f2["head"]
        g2_at_t1 = jnp.take(g2, t1, axis=2)  # [n2, S, n1, L]
        out = out + jnp.einsum("apd,bsd,bsap->ab", dx1, h2, g2_at_t1)
        g1_at_t2 = jnp.take(g1, t2, axis=2)  # [n1, S, n2, L]
        out = out + jnp.einsum("bqd,asd,asbq->ab", dx2, h1, g1_at_t2)
    return out


@functools.partial(jax.jit, static_argnums=0)
def _self(spec, f):
    """‖g‖² for each example of a chunk."""

    def one(fi):
        fi = jax.tree.map(lambda x: x[None], fi)
        return _pair(spec, fi, fi)[0, 0]

    return jax.vmap(one)(f)


class GradientEngine:
    """Per-example gradient features and their pairwise inner products for one architecture.

    graphdef: from ``nnx.split(model)``; like: a parameter state of that model (shapes only).
    States passed to the methods are ``nnx.State`` objects of the same structure.

    recorder: called as ``recorder(name, fn, args)`` before each compiled call the engine
    makes ("features" of a padded chunk, "pair" of two chunks, "self" of one chunk), with
    ``fn`` the ``jax.jit`` function and ``args`` its positional arguments, so ``fn(*args)``
    repeats the call and ``fn.trace(*args)`` costs it (``args[0]`` is hashable and static).
    How many calls a prediction takes depends on the engine's chunking, which only it knows;
    this is how to time or cost them. None (the default) costs nothing. See also
    :meth:`recording`.

    first_layer: for a partially fine-tuned model (``collect.train_layers``), its first trained
    block: gradients are then those of the trained parameters only (blocks first_layer.. and
    the final norm), as in the fine-tuning itself, and every example enters the trained
    blocks from the output of the frozen ones (`RESIDUAL` in the batch). A batch without it
    gets it computed at each call; one scored at several states of a partial run (whose
    checkpoints share their frozen blocks) is given it once by :meth:`attach_residuals`.
    0 (the default): every parameter is trained.
    """

    def __init__(
        self,
        graphdef: Any,
        like: Any,
        cfg: GradConfig | None = None,
        *,
        recorder: Recorder | None = None,
        first_layer: int = 0,
    ):
        self.graphdef = graphdef
        self.recorder = recorder
        self.cfg = cfg = cfg or GradConfig()
        self.paths, leaves, self.treedef = leaf_paths(like)
        self.shapes = [tuple(np.shape(x)) for x in leaves]
        model = nnx.merge(graphdef, like)
        mcfg = model.config
        self.model_config = mcfg
        index = {p: i for i, p in enumerate(self.paths)}
        table_path = ("embed", "embedding")
        head_path = None if mcfg.tie_embeddings else ("lm_head", "kernel")
        if first_layer and cfg.layers != "all":
            raise ValueError(
                "gradients of the last layer only (layers='last') need a trained unembedding; "
                f"with partial fine-tuning (first trained block {first_layer}) it is frozen"
            )
        dense = []
        if cfg.layers == "all" and cfg.factorize == "all":
            dense = sorted(
                (p for p, node in nnx.iter_graph(model) if isinstance(node, nnx.Linear)),
                key=str,
            )
            dense = [p for p in dense if p and p[0] == "layers" and is_trained(p, first_layer)]
        vocab_tap = cfg.factorize != "none"
        if first_layer:  # the trained blocks and final norm; the vocabulary matrices are frozen
            skip = {index[p + ("kernel",)] for p in dense}
            explicit = tuple(
                i for i, p in enumerate(self.paths) if is_trained(p, first_layer) and i not in skip
            )
            embed_tap = embed_stop = head_tap = False
        elif cfg.layers == "all":
            skip = {index[p + ("kernel",)] for p in dense}
            if vocab_tap:
                skip.add(index[table_path])
                if head_path is not None:
                    skip.add(index[head_path])
            explicit = tuple(i for i in range(len(leaves)) if i not in skip)
            embed_tap, embed_stop, head_tap = vocab_tap, False, vocab_tap
        else:  # last layer: the unembedding as used by the head
            head_leaf = index[head_path or table_path]
            explicit = () if vocab_tap else (head_leaf,)
            embed_tap, embed_stop, head_tap = False, mcfg.tie_embeddings, vocab_tap
        self.plan = _Plan(
            explicit=explicit,
            dense=tuple(dense),
            dense_shapes=tuple(self.shapes[index[p + ("kernel",)]] for p in dense),
            embed_tap=embed_tap,
            embed_stop=embed_stop,
            head_tap=head_tap,
            tied=mcfg.tie_embeddings,
            vocab=mcfg.vocab_size,
            hidden=mcfg.hidden_size,
            table_path=table_path,
            head_path=head_path,
            first_layer=first_layer,
        )
        self.num_explicit = int(sum(np.prod(self.shapes[i]) for i in explicit))
        self.proj = self._projections() if cfg.projection_dim else None
        self.spec = _Spec(graphdef, self.treedef, self.plan, cfg.projection_dim)

    # ----------------------------------------------------------------------- compiled calls

    @contextlib.contextmanager
    def recording(self, recorder: Recorder) -> Iterator[None]:
        """Observe the compiled calls made inside the ``with`` block (see ``recorder`` in the
        class docstring); the previous recorder is restored afterwards."""
        previous, self.recorder = self.recorder, recorder
        try:
            yield
        finally:
            self.recorder = previous

    def _features(self, leaves: list[jax.Array], chunk: Batch) -> Any:
        return self._compiled("features", _chunk_features, self.spec, leaves, self.proj, chunk)

    def _compiled(self, name: str, fn: Any, *args: Any) -> Any:
        # Every jitted call goes through here, so a recorder sees all of them.
        if self.recorder is not None:
            self.recorder(name, fn, args)
        return fn(*args)

    # ----------------------------------------------------------------------- projections

    def _proj_for(self, path: tuple, shape: tuple[int, ...]) -> tuple[jax.Array, ...]:
        """Random matrices projecting the gradient of one leaf to d dims.

        1-D leaves: a dense Gaussian [a, d]. Others, seen as [a, b]: r = d / k² independent
        blocks R1_j [a, k], R2_j [b, k], image (R1_jᵀ G R2_j)_j; entries N(0, 1/√d) each, so
        inner products are unbiased. k = 1 has the lowest variance (about 4x a dense Gaussian
        for the low-rank gradients of one example); one block (k = √d) is the cheapest for an
        explicit gradient (a·b·√d flops instead of a·b·d) but much noisier.
        """
        cfg, d = self.cfg, self.cfg.projection_dim
        key = jax.random.fold_in(
            jax.random.key(cfg.seed), zlib.crc32(repr(path).encode()) & 0x7FFFFFFF
        )
        if len(shape) < 2:
            a = int(np.prod(shape))
            return (jax.random.normal(key, (a, d), jnp.float32) / math.sqrt(d),)
        a, b = shape[0], int(np.prod(shape[1:]))
        sides = _block_sides(d)
        if cfg.projection_block:
            if cfg.projection_block not in sides:
                raise ValueError(
                    f"projection_block {cfg.projection_block}: its square must divide "
                    f"projection_dim {d} (allowed: {sides})"
                )
            k = cfg.projection_block
        else:  # the smallest block whose matrices stay under 64 MB
            k = next((k for k in sides if 4 * (a + b) * d // k <= 64 * 2**20), sides[-1])
        r = d // (k * k)
        scale = 1.0 / math.sqrt(math.sqrt(d))
        r1 = jax.random.normal(jax.random.fold_in(key, 1), (a, r, k), jnp.float32) * scale
        r2 = jax.random.normal(jax.random.fold_in(key, 2), (b, r, k), jnp.float32) * scale
        return r1, r2

    def _projections(self) -> dict[str, Any]:
        plan = self.plan
        proj: dict[str, Any] = {
            "explicit": [self._proj_for(self.paths[i], self.shapes[i]) for i in plan.explicit],
            "dense": [
                self._proj_for(p + ("kernel",), s)
                for p, s in zip(plan.dense, plan.dense_shapes, strict=True)
            ],
        }
        v, d = plan.vocab, plan.hidden
        if plan.embed_tap or plan.head_tap:
            proj["table"] = self._proj_for(plan.table_path, (v, d))
            if plan.head_path is not None:
                proj["head"] = self._proj_for(plan.head_path, (d, v))
        return proj

    # ----------------------------------------------------------------------- chunking

    def example_bytes(self, length: int, targets: int) -> tuple[int, int]:
        """(working bytes while computing one example's features, bytes of its features)."""
        mc, p = self.model_config, self.plan
        d, f = mc.hidden_size, mc.intermediate_size
        blocks = mc.num_layers - p.first_layer  # a partial model runs its trained blocks only
        act = 4 * length * (16 * d + 3 * f + 3 * mc.num_heads * length) * blocks
        act += 4 * targets * mc.vocab_size * 4
        grads = 4 * self.num_explicit * 3
        if self.cfg.projection_dim:
            feat = 4 * self.cfg.projection_dim
        else:
            feat = 4 * self.num_explicit
            feat += sum(4 * length * (a + b) for a, b in p.dense_shapes)
            feat += 4 * length * (d + 1) if p.embed_tap else 0
            feat += 4 * targets * (d + mc.vocab_size) if p.head_tap else 0
        return act + grads + feat, feat

    def pair_bytes(self, length: int, targets: int) -> int:
        """Bytes of the intermediates per (example, example) pair in ``_pair``."""
        p = self.plan
        if self.cfg.projection_dim:
            return 8
        per = 8 + 12 * targets * targets
        if p.dense or p.embed_tap:
            per += 12 * length * length
        if p.embed_tap and p.head_tap and p.tied:
            per += 8 * targets * length
        return per

    def chunk_size(self, length: int, targets: int, num: int | None = None) -> int:
        """Examples per chunk: from the memory budget (or the configured chunk_size), and no
        more than the power of two at or above ``num`` (padding is wasted work; powers of two
        bound the number of compiled shapes)."""
        if self.cfg.chunk_size:
            size = self.cfg.chunk_size
        else:
            budget = self.cfg.memory_budget_mb * 2**20
            work, _ = self.example_bytes(length, targets)
            by_work = int(budget / 4 // max(work, 1))
            by_pair = int(math.isqrt(int(budget / 4 // self.pair_bytes(length, targets))))
            size = max(1, min(by_work, by_pair, 256))
        if num:
            size = min(size, 1 << max(0, (int(num) - 1).bit_length()))
        return size

    def _chunks(self, batch: Batch, size: int):
        m = num_examples(batch)
        for start in range(0, m, size):
            idx = np.arange(start, min(start + size, m))
            pad = np.concatenate([idx, np.full(size - len(idx), idx[0])])  # fixed shapes
            yield len(idx), {k: jnp.asarray(v[pad]) for k, v in batch.items()}

    def leaves(self, state: Any) -> list[jax.Array]:
        paths, leaves, treedef = leaf_paths(state)
        if treedef != self.treedef:
            raise ValueError("parameter state does not match the engine's model structure")
        return [jnp.asarray(x) for x in leaves]

    def attach_residuals(self, state: Any, batch: Any) -> Batch:
        """``batch`` with the residual stream entering the first trained block of a partially
        fine-tuned model (`RESIDUAL`), from the frozen blocks of ``state`` (the collection's
        `cached_residuals`); as given when every parameter is trained or it has one already.
        The frozen blocks are the same at every checkpoint of a partial run, so a batch
        scored at several of them needs this once."""
        batch = as_batch(batch)
        if not self.plan.first_layer or RESIDUAL in batch:
            return batch
        # 8 examples a call: the trunk's activations stay small, the last chunk compiles once.
        model = nnx.merge(self.graphdef, state)
        trunk = cached_residuals(model, batch, self.plan.first_layer, chunk=8)
        return batch | {RESIDUAL: np.asarray(trunk[RESIDUAL], np.float32)}

    def features(self, state: Any, batch: Any, chunk: int | None = None) -> list[tuple[int, Any]]:
        """Per-chunk features of every example of a batch: [(real size, features)]."""
        batch = self.attach_residuals(state, batch)
        leaves = self.leaves(state)
        size = chunk or self.chunk_size(
            batch["input_ids"].shape[1], batch["target_pos"].shape[1], num_examples(batch)
        )
        return [(n, self._features(leaves, c)) for n, c in self._chunks(batch, size)]

    def scores(self, state: Any, train: Any, test: Any) -> np.ndarray:
        """[M, N] inner products ⟨∇ℓ(train_i), ∇ℓ(test_n)⟩ at one parameter state."""
        train, test = as_batch(train), as_batch(test)
        m, n = num_examples(train), num_examples(test)
        out = np.zeros((m, n), np.float32)
        if m == 0 or n == 0:
            return out
        leaves = self.leaves(state)
        train, test = self.attach_residuals(state, train), self.attach_residuals(state, test)
        lt, st = test["input_ids"].shape[1], test["target_pos"].shape[1]
        lr, sr = train["input_ids"].shape[1], train["target_pos"].shape[1]
        size_test, size_train = self.chunk_size(lt, st, n), self.chunk_size(lr, sr, m)
        # Hold as many test chunks as half the budget allows; stream the training examples.
        _, feat_bytes = self.example_bytes(lt, st)
        hold = max(1, int(self.cfg.memory_budget_mb * 2**20 / 2 // (feat_bytes * size_test)))
        test_chunks = list(self._chunks(test, size_test))
        for g0 in range(0, len(test_chunks), hold):
            group = [
                (n_real, self._features(leaves, c)) for n_real, c in test_chunks[g0 : g0 + hold]
            ]
            col0 = g0 * size_test
            for r, (m_real, c) in enumerate(self._chunks(train, size_train)):
                ftr = self._features(leaves, c)
                col = col0
                for n_real, fte in group:
                    block = np.asarray(self._compiled("pair", _pair, self.spec, ftr, fte))
                    row = r * size_train
                    out[row : row + m_real, col : col + n_real] = block[:m_real, :n_real]
                    col += n_real
        return out

    def self_scores(self, state: Any, batch: Any) -> np.ndarray:
        """[M] squared gradient norms ‖∇ℓ(z_i)‖² at one parameter state."""
        out = [
            np.asarray(self._compiled("self", _self, self.spec, f))[:n]
            for n, f in self.features(state, batch)
        ]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)
