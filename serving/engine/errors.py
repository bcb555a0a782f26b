"""Engine lifecycle failures: installing the engine's virtualenv, importing a model, starting a
server and waiting for it. Calls to a running engine fail with the `serving.errors` classes.

Each class carries a stable `code`. They are `ServingError`s, so the CLI and the API classify them
as infrastructure failures without knowing about engines.
"""

from __future__ import annotations

from typing import ClassVar

from serving.errors import ServingError


class EngineError(ServingError):
    """Root of every engine lifecycle failure."""

    code: ClassVar[str] = "engine_error"


class EngineNotInstalled(EngineError):
    """The engine's virtualenv (or the configured engine python) is missing or broken."""

    code: ClassVar[str] = "engine_not_installed"


class EngineInstallFailed(EngineError):
    """Creating the virtualenv or a pip step failed; the message ends with pip's last lines."""

    code: ClassVar[str] = "engine_install_failed"


class EngineStartFailed(EngineError):
    """The server process could not be started, or it exited before it was ready."""

    code: ClassVar[str] = "engine_start_failed"


class EngineNotReady(EngineError):
    """The server is alive but did not answer `/health` and `/v1/models` within the deadline."""

    code: ClassVar[str] = "engine_not_ready"


class ModelImportFailed(EngineError):
    """Converting a bundled model (GGUF to a Hugging Face folder) failed or left bad files."""

    code: ClassVar[str] = "model_import_failed"
