"""The one user-facing exception type."""


class VlrtError(Exception):
    """A problem the user can act on: bad input, a missing file, a failed gate.

    The CLI prints its message on one line and exits non-zero, without a traceback.
    Any other exception is a bug in vlrt and keeps its traceback.
    """
