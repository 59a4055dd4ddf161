"""Streaming, mergeable statistics over captured states: memory is fixed by the suite, not the corpus.

One file per statistic (`norms`, `means`, `covariance`, `reservoir`, `sample_norms`), sharing
`base`; `states` rebuilds, serializes and merges them. This package's own import loads nothing,
so an experiment's code digest covers exactly the reducers it imports.
"""
