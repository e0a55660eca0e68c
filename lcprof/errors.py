"""User-facing errors: the CLI turns these into one line and exit code 2."""


class LcprofError(ValueError):
    """A mistake in what the user asked for (unknown model, malformed number, bad config).

    The message must name what was wrong and what would be accepted.
    """


class LcprofRuntimeError(RuntimeError):
    """The environment failed, not the user: a peer rank died, a process group timed out.

    The CLI prints one line naming what failed and exits with code 1.
    """
