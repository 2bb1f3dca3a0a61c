"""Who may call the inference routes.

In team mode (access configured) every inference route needs ``Authorization: Bearer <token>`` of a
principal with the ``service`` role: 401 (:class:`Unauthenticated`) without a known token, 403
(:class:`~civicml.errors.PermissionDenied`) with another role. Single-user mode is open (the server binds
loopback).
"""

from __future__ import annotations

from fastapi import Request

from civicml.errors import PermissionDenied


class Unauthenticated(PermissionDenied):
    """No token, or one the access configuration does not know (HTTP 401)."""


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; :class:`Unauthenticated` without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <service token>'")
    return token.strip()


class Guard:
    """Team mode: inference needs a service token. Single-user mode: open (the server binds loopback).

    Who a token belongs to (and whether it expired or was revoked) is decided by
    :mod:`civicml.access`, the one home of that rule, on every request: the access file is
    parsed again whenever it changes (:class:`civicml.access.AccessFile`), so a revocation
    or expiry takes effect on the next request. Every 401 and 403 is counted for the
    audit trail (:class:`serving.refusals.RefusalAudit`: one record per caller, route,
    status and minute).
    """

    def __init__(self, settings, model: str | None = None):
        from civicml.access import AccessFile
        from serving.refusals import RefusalAudit

        self.settings = settings
        self.team = settings.access_configured
        self.model = model
        self._access = AccessFile(settings) if self.team else None
        self.refusals = RefusalAudit(settings)

    def check(self, request: Request, model: str | None = None) -> str | None:
        if not self.team:
            return None
        caller = "anonymous"
        try:
            token = bearer_token(request)
            caller = self._name_of(token)
            return self._identify(token)
        except PermissionDenied as err:
            status = 401 if isinstance(err, Unauthenticated) else 403
            if model or self.model:
                self.refusals.count(model or self.model, caller, request.url.path, status, str(err))
            raise

    def close(self) -> None:
        self.refusals.close()

    def _name_of(self, token: str) -> str:
        """The principal a token names (also a revoked or expired one), for the audit trail."""
        from civicml.access import token_digest

        try:
            known = self._access.principals()
        except PermissionDenied:
            return "unknown-token"
        digest = token_digest(token)
        return next((n for n, p in known.items() if p.token_sha256 == digest), "unknown-token")

    def _identify(self, token: str) -> str:
        from civicml.access import SERVICE

        try:
            who = self._access.caller(token)
        except PermissionDenied as err:
            raise Unauthenticated("authentication failed: " + str(err).removeprefix("permission denied: ")) \
                from None
        if SERVICE not in who.roles:
            raise PermissionDenied(f"permission denied: {who.name} ({'+'.join(sorted(who.roles))}) may not call "
                                   f"inference routes (needs the service role)")
        return who.name


__all__ = ["Guard", "Unauthenticated", "bearer_token"]
