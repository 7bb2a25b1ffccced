"""Portal users, their tokens and login sessions.

A user logs in with a token ``<user name>.<secret>``; only an scrypt hash of the secret is
stored (``hashlib.scrypt``, random salt, constant-time comparison). A login creates a session:
the browser's cookie holds a random id and the database keeps its sha256 and the session's CSRF
token, which every form (and every state-changing request) must send back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from detector.errors import ConfigError
from detector.review.db import aware
from detector.review.models import ROLES, LoginSession, User, utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SESSION_TTL = timedelta(hours=12)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a brand user sees only ``brand``; an analyst (brand None) sees all."""

    user_id: int
    name: str
    role: str
    brand: str | None

    @property
    def is_analyst(self) -> bool:
        return self.role == "analyst"


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def add_user(db: Session, name: str, role: str, brand: str | None = None) -> str:
    """Create a user (or give an existing one a new token); returns the token, shown once."""
    if not NAME_RE.match(name):
        raise ConfigError(f"user name {name!r}: use letters, digits, '_' or '-' (up to 64)")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (role == "brand") != bool(brand):
        raise ConfigError("a brand user needs --brand; an analyst takes none")
    secret = secrets.token_urlsafe(24)
    user = db.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        user = User(name=name, role=role, brand=brand, token_hash=hash_secret(secret), disabled=False)
        db.add(user)
    else:
        user.role, user.brand, user.token_hash, user.disabled = role, brand, hash_secret(secret), False
        db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    db.commit()
    return f"{name}.{secret}"


def authenticate(db: Session, token: str) -> Principal | None:
    """The user a ``<name>.<secret>`` token belongs to, or None."""
    name, _, secret = token.strip().partition(".")
    if not name or not secret:
        return None
    user = db.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None or user.disabled:
        hash_secret(secret)  # spend the same time whether or not the name exists
        return None
    if not verify_secret(secret, user.token_hash):
        return None
    return Principal(user.id, user.name, user.role, user.brand)


def start_session(db: Session, principal: Principal) -> tuple[str, str]:
    """A new session for ``principal``: (cookie value, CSRF token)."""
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    db.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    db.add(LoginSession(id_hash=_sha(session_id), user_id=principal.user_id, csrf=csrf,
                        created_at=now, expires_at=now + SESSION_TTL))
    db.commit()
    return session_id, csrf


def session_principal(db: Session, session_id: str | None) -> tuple[Principal, str] | None:
    """The user and CSRF token of a live session, or None."""
    if not session_id:
        return None
    row = db.get(LoginSession, _sha(session_id))
    if row is None or aware(row.expires_at) < utcnow():  # type: ignore[operator]
        return None
    user = db.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return Principal(user.id, user.name, user.role, user.brand), row.csrf


def end_session(db: Session, session_id: str | None) -> None:
    if session_id:
        db.execute(delete(LoginSession).where(LoginSession.id_hash == _sha(session_id)))
        db.commit()


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
