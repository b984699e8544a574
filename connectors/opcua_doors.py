"""Who may open a session on the twin's OPC UA server, and how a password travels.

asyncua decides a session's identity at ActivateSession
(``asyncua/server/internal_session.py``): it refuses identity token types that are not in
``InternalServer.supported_tokens``, decrypts a ``UserNameIdentityToken``
(``InternalServer.decrypt_user_token``), checks an ``X509IdentityToken``'s signature and
asks the user manager (:class:`connectors.security.UserFileManager`). The endpoints'
``UserTokenPolicy`` list (``Server._set_endpoints``) tells clients which identities exist
and with which security policy a token is protected. :class:`DoorServer` narrows this:

- anonymous: neither advertised nor accepted unless ``allow_anonymous``
  (``serve-opcua --allow-anonymous``);
- user name and password: advertised on every endpoint with the Basic256Sha256 policy, so
  a client encrypts the password with the server's certificate (RSA-OAEP), also on the
  None endpoint; a token whose password is not encrypted that way is refused
  (BadIdentityTokenRejected), whatever the channel: a password never crosses the wire in
  clear, and is never decrypted by a channel alone;
- X509 certificate: advertised with Basic256Sha256 (the token is signed); accepted when
  the certificate is in ``pki/trusted`` (the user manager checks);
- what a session may do (:class:`RoleRules`): asyncua's roles (``SimpleRoleRuleset``:
  admins change the address space, users read, browse, subscribe, read history, write
  and call), with an anonymous session, when allowed, reading only (no write, no call);
- every refused activation is logged with the client's address, the identity offered and
  the reason.
"""

from __future__ import annotations

import logging

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.permission_rules import (
    ADMIN_TYPES,
    USER_TYPES,
    PermissionRuleset,
    User,
    UserRole,
)
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession

__all__ = ["ENCRYPTED_PASSWORD_ALGORITHMS", "DoorServer", "RoleRules"]

logger = logging.getLogger(__name__)

#: EncryptionAlgorithm of a user-name token whose password is encrypted with the server's
#: certificate (Basic256Sha256 uses RSA-OAEP; Aes*Sha256 policies RSA-OAEP-SHA256).
ENCRYPTED_PASSWORD_ALGORITHMS = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep",
        "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256",
    }
)
_TOKEN_POLICY_URI = security_policies.SecurityPolicyBasic256Sha256.URI


class RoleRules(PermissionRuleset):
    """Which requests a session of each role may send: asyncua's simple roles, with
    anonymous sessions allowed to read (not to write or call methods)."""

    def __init__(self) -> None:
        user = {ua.NodeId(i) for i in USER_TYPES}
        admin = user | {ua.NodeId(i) for i in ADMIN_TYPES}
        changes = {
            ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary),
            ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary),
        }
        self.allowed = {
            UserRole.Admin: admin,
            UserRole.User: user,
            UserRole.Anonymous: user - changes,
        }

    def check_validity(self, user, action_type_id, body) -> bool:
        return action_type_id in self.allowed.get(user.role, set())


class _Refused(ServiceError):
    """A refused activation with the reason logged."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code)
        self.reason = reason


def _who(token) -> str:
    if isinstance(token, ua.UserNameIdentityToken):
        return f"user {token.UserName!r}"
    if isinstance(token, ua.X509IdentityToken):
        return "certificate identity"
    if isinstance(token, ua.AnonymousIdentityToken) or (
        isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null)
    ):
        return "anonymous identity"
    return f"identity {type(token).__name__}"


def _why(token, code: int, anonymous_allowed: bool) -> str:
    anonymous = "anonymous" in _who(token)
    if code == ua.StatusCodes.BadIdentityTokenRejected and anonymous and not anonymous_allowed:
        return "anonymous access is off (serve-opcua --allow-anonymous turns it on)"
    if code == ua.StatusCodes.BadUserAccessDenied:
        if isinstance(token, ua.X509IdentityToken):
            return "certificate not in pki/trusted"
        return "wrong user name or password, locked out, or disabled"
    return ua.StatusCode(code).name


def _address(name) -> str:
    """``host:port`` of a session's peer (asyncua names a session by its socket peer)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


class _DoorSession(InternalSession):
    """An asyncua session that logs a refused activation with the client's address."""

    def activate_session(self, params, peer_certificate):
        token = params.UserIdentityToken
        try:
            result = super().activate_session(params, peer_certificate)
        except ServiceError as exc:
            anonymous = ua.AnonymousIdentityToken in self.iserver.supported_tokens
            reason = getattr(exc, "reason", None) or _why(token, exc.code, anonymous)
            logger.warning(
                "OPC UA sign-in refused from %s: %s: %s", _address(self.name), _who(token), reason
            )
            raise
        logger.info("OPC UA sign-in from %s: %s", _address(self.name), self.user)
        return result


class _DoorInternalServer(InternalServer):
    """asyncua's internal server with :class:`_DoorSession` sessions (``session_class``)
    and encrypted-only passwords."""

    session_class: type[InternalSession] = _DoorSession

    def create_session(
        self, name, user: User | None = None, external: bool = False
    ) -> InternalSession:
        user = user if user is not None else User(role=UserRole.Anonymous)
        return self.session_class(
            self, self.aspace, self.subscription_service, name, user=user, external=external
        )

    def decrypt_user_token(self, isession, token: ua.UserNameIdentityToken) -> tuple[str, str]:
        if token.EncryptionAlgorithm not in ENCRYPTED_PASSWORD_ALGORITHMS:
            raise _Refused(
                ua.StatusCodes.BadIdentityTokenRejected,
                "password not encrypted with the server certificate (EncryptionAlgorithm "
                f"{token.EncryptionAlgorithm!r}; the user token policy asks for "
                "Basic256Sha256)",
            )
        return super().decrypt_user_token(isession, token)


class DoorServer(Server):
    """An asyncua :class:`~asyncua.Server` whose doors follow the module's rules.

    Parameters
    ----------
    user_manager : UserFileManager
        Checks user names, passwords and certificates.
    allow_anonymous : bool
        Advertise and accept the anonymous identity.

    Notes
    -----
    The server needs its certificate and private key loaded (``load_certificate``,
    ``load_private_key``) for every security setting, None included: clients encrypt
    passwords with it.
    """

    #: the internal server's class (a subclass may give its sessions more behaviour)
    internal_server_class: type[InternalServer] = _DoorInternalServer

    def __init__(self, user_manager, *, allow_anonymous: bool = False) -> None:
        super().__init__(iserver=self.internal_server_class(user_manager=user_manager))
        self.rules = RoleRules()
        self.set_security_policy(self._security_policy, permission_ruleset=self.rules)
        tokens = [ua.UserNameIdentityToken, ua.X509IdentityToken]
        if allow_anonymous:
            tokens.insert(0, ua.AnonymousIdentityToken)
        self.set_identity_tokens(tokens)

    def _set_endpoints(self, policy, mode, level) -> None:
        # asyncua builds the endpoint (and its anonymous policy, if any); the user-name
        # and certificate policies are ours: Basic256Sha256 on every endpoint
        tokens = self.iserver.supported_tokens
        self.iserver.supported_tokens = tuple(t for t in tokens if t is ua.AnonymousIdentityToken)
        try:
            super()._set_endpoints(policy, mode, level)
        finally:
            self.iserver.supported_tokens = tokens
        endpoint = self.iserver.endpoints[-1]
        if ua.UserNameIdentityToken in tokens:
            endpoint.UserIdentityTokens.append(
                ua.UserTokenPolicy(
                    PolicyId="username",
                    TokenType=ua.UserTokenType.UserName,
                    SecurityPolicyUri=_TOKEN_POLICY_URI,
                )
            )
        if ua.X509IdentityToken in tokens:
            endpoint.UserIdentityTokens.append(
                ua.UserTokenPolicy(
                    PolicyId="certificate",
                    TokenType=ua.UserTokenType.Certificate,
                    SecurityPolicyUri=_TOKEN_POLICY_URI,
                )
            )
