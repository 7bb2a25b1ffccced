"""Bearer tokens for the service: where they come from and how a request is checked.

Admin endpoints need ``COUNTERFEIT_ADMIN_TOKEN`` (or a token file); without one they are
disabled. Scoring is open unless ``COUNTERFEIT_SCORE_TOKEN`` (or a token file) is set.
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from enum import Enum
from pathlib import Path

from detector.errors import ConfigError

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "COUNTERFEIT_ADMIN_TOKEN"
SCORE_TOKEN_ENV = "COUNTERFEIT_SCORE_TOKEN"
MIN_TOKEN_LENGTH = 16


class AuthResult(Enum):
    """Outcome of checking a request's Authorization header."""

    OK = "ok"
    DISABLED = "disabled"  # no token configured for a protected area (admin)
    MISSING = "missing"  # no or malformed header -> 401
    WRONG = "wrong"  # token does not match -> 403


def load_token(env_var: str, token_file: str | Path | None = None) -> str | None:
    """Read a token from ``token_file`` (wins) or the environment variable ``env_var``.

    Args:
        env_var: Environment variable holding the token.
        token_file: File whose stripped content is the token.

    Returns:
        The token, or None when neither source is set.

    Raises:
        ConfigError: The file cannot be read, or the token is empty or shorter than 16 characters.
    """
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except OSError as e:
            raise ConfigError(f"cannot read token file {path}: {e}") from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by other users; chmod 600 it", path)
        origin = str(path)
    else:
        value = os.environ.get(env_var)
        if value is None:
            return None
        token, origin = value.strip(), f"${env_var}"
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"token from {origin} is too short ({len(token)} chars); use at least {MIN_TOKEN_LENGTH}"
        )
    return token


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check(authorization: str | None, expected: str | None, *, required: bool) -> AuthResult:
    """Check a request's Authorization header against the configured token.

    Args:
        authorization: The raw header value.
        expected: The configured token, or None.
        required: When no token is configured: True means the area is disabled (admin),
            False means it is open (scoring).
    """
    if expected is None:
        return AuthResult.DISABLED if required else AuthResult.OK
    given = bearer_token(authorization)
    if given is None:
        return AuthResult.MISSING
    # compare_digest on bytes: constant time in the token's content (length may leak, which is fine).
    if hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return AuthResult.OK
    return AuthResult.WRONG
