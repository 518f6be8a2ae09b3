"""Experiments of issue #14 on top of the pipeline: the shared CPU protocol the configs in
``configs/`` build on (`experiments.protocol`), the regeneration of ``EXPERIMENTS.md`` from
the experiments' workdirs (``python -m experiments.report``) and the mislabelled-data study
(``python -m experiments.mislabel``). Pipeline-level code: it imports ``gptjax.pipeline`` and
the methods, never the other way round. Run from the repository root."""
