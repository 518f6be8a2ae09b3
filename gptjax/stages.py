"""The pipeline's stages as plain functions (main.py and notebooks call these).

    prep = prepare(config, workdir)          # config check, pools, tokens, base model
    collect_stage(config, workdir, prep)     # fine-tuning runs -> dynamics store
    simulate_stage(config, workdir, prep)    # GPTfluence / Simfluence fitted and scored
    baselines_stage(config, workdir, prep)   # TracIn-CP, Grad-Dot
    report_stage(config, workdir)            # one readable table from all results

Everything a stage produces lives in the workdir, so running the same command again
resumes: finished runs and fitted simulators are not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from gptjax import config as config_lib
from gptjax import store
from gptjax.collect.curricula import steps_per_run
from gptjax.collect.runner import CollectSpec, collect, parse_save_steps
from gptjax.models.config import ModelConfig
from gptjax.models.transformer import Transformer
from gptjax.tasks import Pools, build_pools, tokenize_examples
from gptjax.tasks.tokenize import TokenizedExamples

# Config sections whose change invalidates collected runs.
_COLLECTION_KEYS = ("seed", "data", "model", "collect")
_NOT_AFFECTING_RUNS = {"collect.progress", "collect.split", "collect.runs_per_device"}


@dataclasses.dataclass
class Prepared:
    pools: Pools
    tokenizer: Any
    pool_tokens: TokenizedExamples  # training pool then unseen pool (index = pool id)
    test_tokens: TokenizedExamples
    model: Transformer


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_workdir_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Refuse to mix runs of different configs in one workdir; record the config otherwise."""
    path = workdir / "config.json"
    current = json.loads(config.to_json())
    if path.is_file():
        saved = json.loads(path.read_text())
        a = _flat({k: saved.get(k) for k in _COLLECTION_KEYS})
        b = _flat({k: current.get(k) for k in _COLLECTION_KEYS})
        differ = sorted(
            k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _NOT_AFFECTING_RUNS
        )
        if differ:
            raise ValueError(
                f"workdir {workdir} holds runs collected with another config (differs at "
                f"{', '.join(differ[:5])}); use a new --workdir or restore those values"
            )
    if jax.process_index() == 0:
        store.atomic_write_json(path, current)


def load_base_model(
    config: ml_collections.ConfigDict, pools: Pools | None = None
) -> tuple[Transformer, Any]:
    """(model, tokenizer) as the config's model section describes (before any pretraining)."""
    from gptjax import paths
    from gptjax.models.tokenizer import CompactTokenizer, load_tokenizer
    from gptjax.models.transformer import init_model

    m = config.model
    if m.source != "init":
        if m.compact_vocab:
            raise ValueError("config key 'model.compact_vocab' applies to source 'init' only")
        from gptjax.models import load_model

        return load_model(m.source, m.path, tokenizer=m.tokenizer or None)
    tokenizer = load_tokenizer(m.tokenizer or paths.pythia_tokenizer())
    vocab_size = m.vocab_size
    if m.compact_vocab:
        if pools is None:
            raise ValueError("a compact vocabulary is built from the pools: pass them")
        texts = [t for e in pools.pool + pools.test for t in (e.input, e.target, *e.references)]
        tokenizer = CompactTokenizer.from_texts(tokenizer, texts)
        vocab_size = -(-tokenizer.vocab_size // 64) * 64  # round up, as Pythia pads its vocab
    elif tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"config key 'model.vocab_size' ({vocab_size}) is smaller than the "
            f"tokenizer's vocabulary ({tokenizer.vocab_size})"
        )
    cfg = ModelConfig(
        arch=m.arch,
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        intermediate_size=m.intermediate_size,
        rotary_pct=m.rotary_pct,
        parallel_residual=m.arch == "gpt_neox",
        attention_bias=m.arch == "gpt_neox",
        mlp_bias=m.arch == "gpt_neox",
        max_position_embeddings=max(2048, config.data.max_len),
        eos_token_id=tokenizer.eos_id,
    )
    return init_model(cfg, seed=m.init_seed), tokenizer


def _pretrain_pools(config: ml_collections.ConfigDict) -> Pools:
    d = config.data
    kwargs = d.task_kwargs.to_dict() | config.model.pretrain_task_kwargs.to_dict()
    return build_pools(
        d.task,
        pool_size=config.model.pretrain_examples,
        unseen_size=0,
        test_size=1,
        seed=config.seed + 1,
        fmt=d.format,
        data_root=d.data_root or None,
        source=d.source,
        **kwargs,
    )


def _pretrain(config: ml_collections.ConfigDict, model: Transformer, tokenizer) -> Transformer:
    from gptjax.collect.pretrain import pretrain_base

    tokens = _tokenize(_pretrain_pools(config).pool, tokenizer, config.data.max_len)
    model, loss = pretrain_base(
        model,
        _token_dict(tokens),
        steps=config.model.pretrain_steps,
        batch_size=config.model.pretrain_batch_size,
        learning_rate=config.model.pretrain_lr,
        seed=config.seed,
    )
    print(f"pretrained the base model: {config.model.pretrain_steps} steps, loss {loss:.4f}")
    return model


def _wait_for(path: Path, timeout_s: float = 3600) -> None:
    import time

    start = time.monotonic()
    while not path.is_file():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.5)


def _tokenize(examples, tokenizer, max_len: int) -> TokenizedExamples:
    return tokenize_examples(examples, tokenizer, max_len=max_len)


def prepare(config: ml_collections.ConfigDict, workdir: str | Path) -> Prepared:
    from gptjax.models.checkpoint import restore_model, save_model

    config_lib.validate(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir_config(config, workdir)
    d = config.data
    mixture = tuple(t.strip() for t in d.mixture_tasks.split(",") if t.strip()) or None
    pools = build_pools(
        d.task,
        pool_size=d.pool_size,
        unseen_size=d.unseen_size,
        test_size=d.test_size,
        seed=config.seed,
        fmt=d.format,
        label_noise=d.label_noise,
        data_root=d.data_root or None,
        source=d.source,
        encoder_text=d.encoder_text,
        tasks=mixture,
        **d.task_kwargs.to_dict(),
    )
    model, tokenizer = load_base_model(config, pools)
    model_dir = workdir / "model"
    primary = jax.process_index() == 0  # with several processes, one writes shared files
    if not (model_dir / "config.json").is_file():  # config.json is written last
        if primary:
            if config.model.pretrain_steps:
                model = _pretrain(config, model, tokenizer)
            save_model(model, model_dir)
        else:
            _wait_for(model_dir / "config.json")
    # Always the saved copy: every process and every resumed invocation starts from it.
    model = restore_model(model_dir)
    prep = Prepared(
        pools=pools,
        tokenizer=tokenizer,
        pool_tokens=_tokenize(pools.pool, tokenizer, d.max_len),
        test_tokens=_tokenize(pools.test, tokenizer, d.max_len),
        model=model,
    )
    if primary:
        _write_pools(workdir, pools)
    return prep


def _write_pools(workdir: Path, pools: Pools) -> None:
    def rows(examples):
        return [dataclasses.asdict(e) for e in examples]

    store.atomic_write_json(
        workdir / "data" / "pools.json",
        {
            "train": rows(pools.train),
            "unseen": rows(pools.unseen),
            "test": rows(pools.test),
            "flipped": np.asarray(pools.flipped).astype(bool).tolist(),
            "task_of_train": list(pools.task_of_train),
            "task_of_test": list(pools.task_of_test),
        },
    )
    if pools.relatedness is not None:
        np.save(workdir / "data" / "relatedness.npy", np.asarray(pools.relatedness, np.float32))


def collect_spec(config: ml_collections.ConfigDict) -> CollectSpec:
    c = config.collect
    num_steps = steps_per_run(c.subset_size, c.batch_size, c.epochs)
    return CollectSpec(
        seed=config.seed,
        num_runs=c.num_runs,
        subset_size=c.subset_size,
        batch_size=c.batch_size,
        epochs=c.epochs,
        learning_rate=c.learning_rate,
        warmup_steps=c.warmup_steps,
        end_lr_factor=c.end_lr_factor,
        b1=c.b1,
        b2=c.b2,
        eps=c.eps,
        weight_decay=c.weight_decay,
        eval_chunk=c.eval_chunk,
        runs_per_device=c.runs_per_device,
        save_steps=parse_save_steps(c.save_params, num_steps),
        save_params_regex=c.save_params_regex,
        unseen_runs=c.unseen_runs,
    )


def _token_dict(tokens: TokenizedExamples) -> dict[str, np.ndarray]:
    return {f.name: getattr(tokens, f.name) for f in dataclasses.fields(tokens)}


def collect_stage(config: ml_collections.ConfigDict, workdir: str | Path, prep: Prepared) -> None:
    spec = collect_spec(config)
    extra_eval = None
    if config.collect.generation_every > 0 and prep.pools.test[0].references:
        from gptjax.collect.generation_eval import make_generation_eval

        extra_eval = make_generation_eval(config, prep)
    meta = {
        "task": config.data.task,
        "model": prep.model.config.to_dict(),
    }
    collect(
        workdir,
        spec,
        prep.model,
        _token_dict(prep.pool_tokens),
        _token_dict(prep.test_tokens),
        pool_size=len(prep.pools.train),
        unseen_size=len(prep.pools.unseen),
        extra_eval=extra_eval,
        extra_eval_every=max(config.collect.generation_every, 1),
        meta=meta,
        progress=config.collect.progress,
    )


def run_split(config: ml_collections.ConfigDict, dyn: store.Dynamics) -> dict[str, list[int]]:
    """Train / validation / test runs, in run order, leaving out runs that diverged."""
    n_train, n_val, n_test = config_lib.split_counts(config)
    valid = [k for k in range(dyn.num_runs) if dyn.valid[k]]
    dropped = dyn.num_runs - len(valid)
    if len(valid) < n_train + n_val + n_test:
        raise ValueError(
            f"{dropped} runs diverged; {len(valid)} valid runs are too few for the split "
            f"{config.collect.split}"
        )
    return {
        "train": valid[:n_train],
        "val": valid[n_train : n_train + n_val],
        "test": valid[n_train + n_val : n_train + n_val + n_test],
    }


def simulate_stage(
    config: ml_collections.ConfigDict, workdir: str | Path, prep: Prepared
) -> dict[str, Any]:
    from simulator.encoder import cached_features
    from simulator.stage import run_simulators

    workdir = Path(workdir)
    dyn = store.load_dynamics(workdir, config.collect.num_runs)
    texts_pool = [e.encoder_text for e in prep.pools.pool]
    texts_test = [e.encoder_text for e in prep.pools.test]
    pooling = config.simulator.get("pooling", "mean")
    features = workdir / "features"
    dyn_dict = dyn.as_dict() | {
        "train_features": cached_features(features, texts_pool, pooling=pooling),
        "test_features": cached_features(features, texts_test, pooling=pooling),
    }
    return run_simulators(dyn_dict, run_split(config, dyn), config.simulator, workdir)


def baselines_stage(
    config: ml_collections.ConfigDict, workdir: str | Path, prep: Prepared
) -> dict[str, Any]:
    from flax import nnx

    from baselines.stage import run_baselines
    from gptjax.collect.checkpoints import params_reader

    workdir = Path(workdir)
    dyn = store.load_dynamics(workdir, config.collect.num_runs)
    graphdef, _ = nnx.split(prep.model)
    params_at, saved_steps = params_reader(workdir, prep.model)
    return run_baselines(
        dyn.as_dict(),
        run_split(config, dyn),
        config.baselines,
        workdir,
        graphdef=graphdef,
        params_at=params_at,
        saved_steps=saved_steps,
        train_tokens=_token_dict(prep.pool_tokens),
        test_tokens=_token_dict(prep.test_tokens),
    )


def report_stage(config: ml_collections.ConfigDict, workdir: str | Path, results: dict) -> str:
    """One Markdown report of every method on the held-out test runs, per metric."""
    from simulator.metrics import results_table

    workdir = Path(workdir)
    lines = [f"# Results: {config.data.task}, {config.model.source} model\n"]
    by_metric: dict[str, dict[str, dict]] = {}
    for stage_results in results.values():
        for metric, rows in stage_results.items():
            by_metric.setdefault(metric, {}).update(rows)
    for metric, rows in sorted(by_metric.items()):
        lines.append(f"## {metric} (held-out test runs)\n")
        shown = {m: r for m, r in rows.items() if not r.get("not_applicable")}
        lines.append(results_table(shown))
        skipped = sorted(set(rows) - set(shown))
        if skipped:
            lines.append(
                f"\nNot applicable to {metric}: {', '.join(skipped)} "
                "(gradient influence predicts changes in loss only)."
            )
        lines.append("")
    report = "\n".join(lines)
    store.atomic_write_bytes(workdir / "results" / "report.md", report.encode())
    return report


def run_pipeline(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run the stages the config names, in order; returns each stage's results."""
    import jax

    stages = config_lib.stages_of(config)
    prep = prepare(config, workdir)
    results: dict[str, Any] = {}
    if "collect" in stages:
        collect_stage(config, workdir, prep)
        if jax.process_count() > 1 and set(stages) - {"collect"}:
            if jax.process_index() != 0:
                return results  # process 0 runs the stages that need every run
            wait_for_runs(workdir, config.collect.num_runs)
    if "simulate" in stages:
        results["simulate"] = simulate_stage(config, workdir, prep)
    if "baselines" in stages:
        results["baselines"] = baselines_stage(config, workdir, prep)
    if "report" in stages and results:
        print(report_stage(config, workdir, results))
    return results


def wait_for_runs(workdir: str | Path, num_runs: int, timeout_s: float = 24 * 3600) -> None:
    """Block until every run is on disk (other processes write theirs)."""
    import time

    start = time.monotonic()
    while len(store.completed_runs(workdir) & set(range(num_runs))) < num_runs:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"runs still missing from {workdir} after {timeout_s:.0f} s")
        time.sleep(1.0)
