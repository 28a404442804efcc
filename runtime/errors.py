"""The one exception type users see.

Every package raises :class:`EdgeDeeplabError` (or a subclass) for problems the user can fix: a
missing file, a bundle of the wrong kind, a dataset without images. The CLI prints its message as a
single line and exits non-zero; anything else is a bug and keeps its traceback. It lives in
``runtime`` because that is the lowest layer: every other package may import it.
"""

from __future__ import annotations


class EdgeDeeplabError(Exception):
    """A user-facing error: the message is one line that says what is wrong and what to do."""


class BundleError(EdgeDeeplabError):
    """A bundle directory is missing, incomplete, corrupt or of an unsupported schema."""
