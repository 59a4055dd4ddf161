"""One error type for everything a user can get wrong, so the CLI can print it without a traceback."""

from __future__ import annotations


class AtlasError(Exception):
    """A problem the user can fix: says what is wrong (`thing`), why (`cause`) and what to do (`fix`)."""

    def __init__(self, thing: str, cause: str, fix: str = "") -> None:
        self.thing, self.cause, self.fix = thing, cause, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.thing}: {self.cause}"
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class ModelLoadError(AtlasError):
    """A model named in the suite could not be loaded (offline, missing, corrupt, unsupported)."""


class SuiteError(AtlasError):
    """The suite file is malformed: unknown key, wrong type, impossible value."""


class InputError(AtlasError):
    """The inputs cannot be built: too little text, empty file, sequence longer than the context."""


class CaptureError(AtlasError):
    """The rebuilt residual stream disagrees with the model's own hidden states."""


class ExecutorError(AtlasError):
    """The machinery that runs capture failed: this fails the run (exit 1), not just one model.

    Ray cluster unreachable, a shard that failed on every try, no worker able to start. A model
    that is merely not available (offline, too big) is a skip instead.
    """
