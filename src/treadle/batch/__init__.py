"""Batch systems (local process groups, Slurm, HTCondor) for the engine and the worker factory.

This layer submits, watches and cancels batch jobs and knows nothing of rules,
tasks, the DAG or the journal: the engine's ``-T slurm`` and ``-T condor``
backends and the factory's providers are thin shells around it
(docs/batch.md).
"""
