"""One boundary for Redis errors: redis-py exceptions become RedisUnavailable (password
redacted), and the type under which library code holds a client."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from redis import exceptions as redis_errors

from hivebus.domain.errors import HivebusError, RedisUnavailable
from hivebus.settings import redact_url

# redis-py annotates replies as ``bytes | str`` whatever ``decode_responses`` says; our clients
# always decode, so library code treats the client as untyped and types what it returns.
Redis: TypeAlias = Any


@contextlib.asynccontextmanager
async def translate_redis_errors(url: str | None = None) -> AsyncIterator[None]:
    """Turn redis-py errors raised inside the block into RedisUnavailable, password redacted."""
    try:
        yield
    except HivebusError:
        raise
    except redis_errors.AuthenticationError:
        raise RedisUnavailable(f"Redis refused the credentials{_at(url)}") from None
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, ssl.SSLError) as exc:
        raise RedisUnavailable(f"cannot reach Redis{_at(url)}: {_scrub(str(exc), url)}") from None
    except redis_errors.RedisError as exc:
        raise RedisUnavailable(f"Redis error{_at(url)}: {_scrub(str(exc), url)}") from None


def _at(url: str | None) -> str:
    return f" at {redact_url(url)}" if url else ""


def _scrub(message: str, url: str | None) -> str:
    if url:
        from urllib.parse import urlsplit

        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                message = message.replace(password, "***")
    return message.splitlines()[0] if message else message
