"""botstate's exception hierarchy.

Every error a storage raises names the backend and, where there is one, the key, so a log line is
enough to find the entry that failed. Client-library exceptions never escape a backend: they are
wrapped here, with the original kept as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BotstateError",
    "ConfigError",
    "CorruptValueError",
    "LockError",
    "SerializationError",
    "StorageError",
    "StorageUnavailable",
    "WrongTypeError",
]


class BotstateError(Exception):
    """Base of every exception botstate raises on purpose."""


class ConfigError(BotstateError, ValueError):
    """A storage was configured wrongly: a bad URL, an unknown scheme, an invalid option."""


class StorageError(BotstateError):
    """An operation on a storage failed.

    ``key`` is the key the operation was about (``None`` for whole-storage operations such as
    ``clear``) and ``backend`` names the storage class, so the message alone locates the failure.
    """

    def __init__(self, message: str, *, key: str | None = None, backend: str | None = None) -> None:
        self.key = key
        self.backend = backend
        where = []
        if backend is not None:
            where.append(f"backend={backend}")
        if key is not None:
            where.append(f"key={key!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.message = message


class StorageUnavailable(StorageError):
    """The backend could not be reached, or did not answer in time. Retrying later may succeed."""


class SerializationError(StorageError, TypeError):
    """The codec cannot encode a value. Raised by ``set`` before anything is written."""


class CorruptValueError(StorageError):
    """Stored bytes that the codec cannot decode.

    The entry is left as it is (neither returned half-decoded nor deleted), so it can be inspected
    or repaired; ``delete`` or ``set`` on the key still work.
    """


class WrongTypeError(StorageError, TypeError):
    """An operation met a stored value of the wrong type, such as ``increment`` on a non-integer."""


class LockError(StorageError):
    """A lock could not be acquired in time, or was lost because its lease ran out."""
