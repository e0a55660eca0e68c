"""Shared helpers for the tests, importable from any test folder as ``support.<module>``.

``pyproject.toml`` puts ``tests/`` on pytest's ``pythonpath``, so ``from support.tiny_models import
tiny_spec`` works whichever folders run together (``from conftest import`` did not: the first
folder's conftest module shadowed the others'). conftest.py files keep only fixtures, built on
these modules.

- :mod:`support.tiny_models`: tiny HF-style configs of every attention and MLP variant lcprof models
  (the measurement tests);
- :mod:`support.hf_configs`: llama- and MLA-family config builders (the foundation tests);
- :mod:`support.attention_reference`: brute-force float64 attention (the ring tests; imports torch);
- :mod:`support.results_files`: writing results tables and running the CLI in-process (the explain tests).
"""
