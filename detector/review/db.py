"""Opening the review database: URL normalisation, the engine, and the Alembic migrations.

``DB_URL`` is any SQLAlchemy URL (``postgresql+psycopg://...`` for several service instances);
a plain file path means a SQLite file. Opening runs the migrations up to the newest revision,
so a fresh file or an older schema is brought up to date before use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from detector.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def normalise_url(url: str | Path) -> str:
    """``sqlite:///...`` for a plain path (its folder is created); other URLs unchanged."""
    text = str(url)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    try:
        parsed = make_url(text)
    except Exception as e:  # sqlalchemy raises ArgumentError; say it in our terms
        raise ConfigError(f"not a database URL: {text!r} ({e})") from e
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    return text


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for other databases (and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def open_engine(url: str | Path) -> Engine:
    """An engine for ``url`` with the schema migrated to the newest revision."""
    url = normalise_url(url)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as e:
        raise ConfigError(f"cannot open review database {url!r}: {e}") from e
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # the service writes while the portal reads
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
