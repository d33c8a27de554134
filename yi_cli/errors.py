"""The one error type for user-facing failures; cli.py prints it as a single line."""

EXIT_OK = 0
EXIT_CHAT = 1
EXIT_USAGE = 2
EXIT_LOAD = 3
EXIT_INTERRUPTED = 130


class YiError(Exception):
    """A failure the user can act on. `str(err)` is the whole message: one line, no traceback."""

    exit_code = EXIT_CHAT


class LoadError(YiError):
    """The model could not be loaded: missing path, corrupt config or weights, unsupported format."""

    exit_code = EXIT_LOAD


class UsageError(YiError):
    exit_code = EXIT_USAGE
