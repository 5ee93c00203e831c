"""One error hierarchy: every failure the library expects carries a message and the fix."""

from __future__ import annotations


class StablekitError(Exception):
    """A failure the user can act on; printed as one `Error:` line plus a `Hint:` line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(StablekitError):
    """Bad input from the user (an option value, a file they named): exit code 2."""

    exit_code = 2


class UnknownModelError(UsageError):
    """An id or alias that is neither in the catalog, a local folder nor a hub repo id."""


class CatalogError(UsageError):
    """A catalog file (built-in or the user's) that does not follow the schema."""


class PresetError(UsageError):
    """A preset that is missing or does not match the request it is applied to."""


class InputError(UsageError):
    """An input file (image, mask, prompts file) that is missing or unreadable."""


class ModelNotDownloadedError(StablekitError):
    """The weights are not on disk and the hub cannot be reached (or we are told to stay offline)."""


class GatedModelError(StablekitError):
    """The hub refused the download because the licence must be accepted first."""


class ModelUnavailableError(StablekitError):
    """The repository is gone from the hub (withdrawn or renamed) and no fallback answered."""


class DoesNotFitError(StablekitError):
    """No device plan fits the memory budget."""


class OutputError(StablekitError):
    """An output could not be written."""
