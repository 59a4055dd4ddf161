"""The experiments: one module each, declaring `EXPERIMENT` (see `generator/experiment.py`).

Drop a module here and it becomes a page; nothing else lists experiments.
"""
