"""Who may do what: roles, identities from tokens, and the check every registry call makes.

The roles::

    data_scientist   train, tune, register, set 'challenger' (or any alias but 'champion')
    release_manager  approve, promote, roll back
    service          read and predict; hand in late labels (feedback)
    policy_owner     replace a model's governing policy, force past its input contract
    labeller         read, and hand in late labels (feedback) only: no predict, promote or register
    reviewer         review served answers: a human override, audited, that becomes the answer's label

Every role reads (list, show, lineage, audit, model cards); every role but ``labeller`` predicts.

Without access configuration (no ``CIVICML_ACCESS_FILE``, no ``$CIVICML_HOME/access.yaml``)
CivicML runs in *single-user mode*: the acting user (``CIVICML_USER`` or the OS user)
holds every role, and each audit record says ``auth: single-user``. Once access is
configured, every call needs a token (``CIVICML_TOKEN``); there is no default password
and no fallback. Roles come only from the access file: an environment variable may
point at the file but never grants a role (``CIVICML_ACCESS``, which once held the
file's content inline, is refused), and an access file that is set but empty,
missing or unreadable is an error, never single-user mode.

The access file lists principals with their roles and the SHA-256 digest of their
token (tokens themselves are never stored); a token may expire, and may be revoked::

    principals:
      ana:  {roles: [data_scientist], token_sha256: 9f2c...}
      rui:  {roles: [release_manager], token_sha256: 41ab..., expires: 2027-06-30}
      old:  {roles: [release_manager], token_sha256: 77e0..., revoked: true}
      router: {roles: [service], token_sha256: 7d03...}

``civicml token NAME`` prints a fresh token and the line to paste.

These checks run in the caller's process: they keep honest people from mistakes
and record who did what, but anyone who can reach the tracking server can call
MLflow directly. Protect the server itself too (see docs/team-mode.md).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from civicml.errors import InvalidInput, PermissionDenied
from civicml.settings import Settings

DATA_SCIENTIST = "data_scientist"
RELEASE_MANAGER = "release_manager"
SERVICE = "service"
POLICY_OWNER = "policy_owner"  # may replace a model's governing policy, or force past its input contract
REVIEWER = "reviewer"  # may override a served answer (`civicml review`): audited, and the answer's label
LABELLER = "labeller"  # joins true outcomes to served answers (POST /feedback, civicml feedback), nothing else
ROLES = (DATA_SCIENTIST, RELEASE_MANAGER, SERVICE, POLICY_OWNER, REVIEWER, LABELLER)

# action -> roles allowed to perform it
ACTIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "predict": frozenset(ROLES) - {LABELLER},
    "train": frozenset({DATA_SCIENTIST}),
    "tune": frozenset({DATA_SCIENTIST}),
    "register": frozenset({DATA_SCIENTIST}),
    "set_alias": frozenset({DATA_SCIENTIST}),
    "approve": frozenset({RELEASE_MANAGER}),
    "promote": frozenset({RELEASE_MANAGER}),
    "rollback": frozenset({RELEASE_MANAGER}),
    "override_policy": frozenset({POLICY_OWNER}),
    "force_promote": frozenset({POLICY_OWNER}),
    # a serving replica (service token) whose canary passed its limits, or a release manager
    "stop_rollout": frozenset({SERVICE, RELEASE_MANAGER}),
    "review": frozenset({REVIEWER}),
    # late labels joined to served answers: a serving replica's caller, or a person who labels
    "feedback": frozenset({SERVICE, LABELLER}),
}
# what each action covers, for the table in docs/team-mode.md
ACTION_TEXT = {
    "read": "read: list, show, lineage, audit, model card",
    "predict": "predict (resolve, serve)",
    "train": "train",
    "tune": "tune",
    "register": "register a version",
    "set_alias": "set `challenger` or a named alias (never `champion`)",
    "approve": "approve a version",
    "promote": "promote under the model's governing policy",
    "rollback": "roll back",
    "override_policy": "promote under a policy other than the governing one",
    "force_promote": "`promote --force` past a broken input contract",
    "stop_rollout": "stop a canary or shadow automatically (a serving replica over its limits)",
    "review": "review a served answer (`civicml review`): a human override, audited, kept as its label",
    "feedback": "hand in late labels: `POST /feedback`, `civicml feedback`",
}
_PRINCIPAL_FIELDS = ("roles", "token_sha256", "expires", "revoked")


@dataclass(frozen=True)
class Identity:
    """Who is calling: a name, the roles held, and how that was established."""

    name: str
    roles: frozenset[str]
    auth: str  # "single-user" or "token"

    def may(self, action: str) -> bool:
        return bool(self.roles & _allowed(action))

    def to_record(self) -> dict[str, object]:
        return {"who": self.name, "roles": sorted(self.roles), "auth": self.auth}


def _allowed(action: str) -> frozenset[str]:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown action '{action}' (known: {', '.join(ACTIONS)})") from None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its digest (the digest goes into the access file)."""
    token = "civicml_" + secrets.token_urlsafe(32)
    return token, token_digest(token)


def _load_config(settings: Settings) -> tuple[dict, str]:
    if settings.access_problem:
        raise PermissionDenied(f"permission denied: {settings.access_problem}")
    where = f"access file {settings.access_file}"
    try:
        text = Path(settings.access_file).read_text()
    except FileNotFoundError:
        raise InvalidInput(f"{where} not found (CIVICML_ACCESS_FILE)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{where} is unreadable ({err.__class__.__name__}); it is never taken as single-user "
                           f"mode") from None
    if not text.strip():
        raise InvalidInput(f"{where} is empty; list principals in it (an empty file is never single-user mode)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidInput(f"{where}: not valid YAML ({err.__class__.__name__})") from None
    return data or {}, where


@dataclass(frozen=True)
class Principal:
    roles: frozenset[str]
    token_sha256: str
    expires: dt.datetime | None = None
    revoked: bool = False


def _expiry(value, where: str, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time.max)  # a date: the whole day is valid
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidInput(f"{where}: field '{field}' must be a date or time (2027-06-30 or "
                               f"2027-06-30T18:00:00Z), got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def principals(settings: Settings) -> dict[str, Principal]:
    """name -> principal (roles, token digest, expiry, revoked), validated; every mistake names its field."""
    data, where = _load_config(settings)
    if not isinstance(data, dict) or set(data) - {"principals"}:
        extra = sorted(set(data) - {"principals"}) if isinstance(data, dict) else []
        raise InvalidInput(f"{where}: unknown field '{extra[0]}' (known: principals)" if extra
                           else f"{where}: expected a mapping with 'principals'")
    entries = data.get("principals") or {}
    if not isinstance(entries, dict):
        raise InvalidInput(f"{where}: field 'principals' must map names to {{roles, token_sha256}}")
    if not entries:
        raise InvalidInput(f"{where} lists no principals (an empty access file is never single-user mode)")
    out: dict[str, Principal] = {}
    seen: dict[str, str] = {}
    for name, entry in entries.items():
        field = f"principals.{name}"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where}: field '{field}' must be a mapping with roles and token_sha256")
        for key in entry:
            if key not in _PRINCIPAL_FIELDS:
                raise InvalidInput(f"{where}: unknown field '{field}.{key}'{_did_you_mean(key, _PRINCIPAL_FIELDS)}")
        roles = entry.get("roles")
        roles = [roles] if isinstance(roles, str) else roles
        if not roles or not isinstance(roles, list):
            raise InvalidInput(f"{where}: field '{field}.roles' must list at least one of {', '.join(ROLES)}")
        for role in roles:
            if role not in ROLES:
                raise InvalidInput(f"{where}: field '{field}.roles': unknown role '{role}'"
                                   f"{_did_you_mean(str(role), ROLES)}")
        digest = str(entry.get("token_sha256") or "").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput(f"{where}: field '{field}.token_sha256' must be the 64-hex-digit SHA-256 of a "
                               f"token (make one with `civicml token {name}`)")
        if digest in seen:
            raise InvalidInput(f"{where}: principals '{seen[digest]}' and '{name}' share one token")
        revoked = entry.get("revoked", False)
        if not isinstance(revoked, bool):
            raise InvalidInput(f"{where}: field '{field}.revoked' must be true or false, got {revoked!r}")
        seen[digest] = str(name)
        out[str(name)] = Principal(frozenset(roles), digest, _expiry(entry.get("expires"), where,
                                                                     f"{field}.expires"), revoked)
    return out


def caller(settings: Settings, now: dt.datetime | None = None) -> Identity:
    """The identity behind ``settings``: single-user without access configuration, else from the token."""
    if not settings.access_configured:
        return Identity(settings.user, frozenset(ROLES), "single-user")
    return identify(principals(settings), settings.token, now)


def identify(known: dict[str, Principal], token: str | None, now: dt.datetime | None = None) -> Identity:
    """Whose ``token`` it is among ``known``: refused when unknown, revoked or expired (at ``now``)."""
    if not token:
        raise PermissionDenied("permission denied: access is configured; set CIVICML_TOKEN to your token")
    digest = token_digest(token)
    for name, principal in known.items():
        if hmac.compare_digest(digest, principal.token_sha256):
            if principal.revoked:
                raise PermissionDenied(f"permission denied: the token of '{name}' was revoked")
            moment = now or dt.datetime.now(dt.timezone.utc)
            if principal.expires is not None and moment > principal.expires:
                raise PermissionDenied(f"permission denied: the token of '{name}' expired at "
                                       f"{principal.expires.isoformat(timespec='seconds')}")
            return Identity(name, principal.roles, "token")
    raise PermissionDenied("permission denied: the token is not in the access configuration")


class AccessFile:
    """The principals of one access file for a long-lived process (a server checking every request).

    The file is parsed again whenever it changes: each check compares its inode, size,
    mtime and ctime (one ``stat``) with those of the parse in hand, so a revocation or a
    new expiry takes effect on the very next request; expiry itself is judged against
    the clock on every check. Nothing else is remembered."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._state: tuple | None = None
        self._known: dict[str, Principal] = {}

    def _file_state(self) -> tuple | None:
        try:
            st = Path(self.settings.access_file).stat()
        except (OSError, TypeError):
            return None  # principals() says why
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def principals(self) -> dict[str, Principal]:
        state = self._file_state()
        if state is None or state != self._state:
            known = principals(self.settings)
            self._state, self._known = state, known
        return self._known

    def caller(self, token: str | None, now: dt.datetime | None = None) -> Identity:
        return identify(self.principals(), token, now)


def parse_expiry(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """A new token's expiry (a date: the whole day; a time: UTC unless it says otherwise); refused when it is
    not a date, or already past."""
    moment = _expiry(value, "--expires", "expires")
    if moment <= (now or dt.datetime.now(dt.timezone.utc)):
        raise InvalidInput(f"--expires {value} is in the past; a token must expire later than now")
    return moment


def require(settings: Settings, action: str) -> Identity:
    """The caller's identity if it may perform ``action``; else :class:`PermissionDenied`."""
    allowed = _allowed(action)
    who = caller(settings)
    if not who.roles & allowed:
        role = "+".join(sorted(who.roles))
        raise PermissionDenied(f"permission denied: {role} may not {action.replace('_', ' ')} "
                               f"({who.name}; needs {' or '.join(sorted(allowed))})")
    return who


def markdown_table() -> str:
    """The role x action table, as docs/team-mode.md prints it (generated from :data:`ACTIONS`)."""
    lines = ["| action | " + " | ".join(ROLES) + " |", "|---|" + "---|" * len(ROLES)]
    for action, allowed in ACTIONS.items():
        lines.append(f"| {ACTION_TEXT[action]} | " + " | ".join("yes" if r in allowed else "" for r in ROLES)
                     + " |")
    return "\n".join(lines) + "\n"


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


if __name__ == "__main__":  # `python -m civicml.access`: the table docs/team-mode.md prints
    print(markdown_table(), end="")
