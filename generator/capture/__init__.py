"""Capture: hooks that stream every capture point of a forward pass into reducers.

`sites` names the points (torch-free: the renderer and experiments import it), `batch` holds a
batch and its captured states, `wiring` resolves an architecture declaration to the model's
modules, `hooks` installs and removes the hooks, `check` is the residual self-check, `hashing`
the shard-invariant token keys, `vector_math` the once-per-process start of MKL's vector
math. This package's own import loads nothing.
"""
