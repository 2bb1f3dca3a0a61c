"""Every error CivicML raises on purpose derives from :class:`CivicMLError`.

The CLI maps these to exit code 2 with one line; the HTTP layer maps them to
4xx responses. Anything else is a bug and is allowed to surface as such.
"""


class CivicMLError(Exception):
    """Root of CivicML's own errors."""


class InvalidInput(CivicMLError, ValueError):
    """Input that a user or a client sent is malformed or does not fit the schema."""


class NotFound(CivicMLError, LookupError):
    """A named thing (model, version, alias, study, file, use case) does not exist."""


class PermissionDenied(CivicMLError):
    """The caller's role may not perform the action."""


class IntegrityError(CivicMLError):
    """Stored artifacts do not match the checksum recorded at registration."""


class Unavailable(CivicMLError):
    """A store CivicML depends on (artifact store, tracking server) did not answer; nothing was changed."""


class Failed(CivicMLError):
    """The work a command started ended without a result (e.g. no trial of a study completed); the message
    names the first failure, and whatever that work created is removed."""


def did_you_mean(word, options) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``word``, or ``""``: the hint of every "unknown ..."
    error."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
