"""The exception hierarchy: what callers catch, and what a log line tells them."""

from __future__ import annotations

import pytest

from botstate import (
    BotstateError,
    ConfigError,
    CorruptValueError,
    LockError,
    SerializationError,
    StorageError,
    StorageUnavailable,
    WrongTypeError,
)


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (ConfigError, (BotstateError, ValueError)),
        (StorageError, (BotstateError,)),
        (StorageUnavailable, (StorageError,)),
        (SerializationError, (StorageError, TypeError)),
        (CorruptValueError, (StorageError,)),
        (WrongTypeError, (StorageError, TypeError)),
        (LockError, (StorageError,)),
    ],
)
def test_hierarchy(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    for base in bases:
        assert issubclass(error, base)
    assert issubclass(error, BotstateError)


def test_storage_errors_are_not_value_errors_by_accident() -> None:
    assert not issubclass(CorruptValueError, (TypeError, ValueError))
    assert not issubclass(StorageUnavailable, (TypeError, ValueError))


def test_message_names_backend_and_key() -> None:
    error = CorruptValueError("cannot decode", key="chat:1", backend="redis")
    assert str(error) == "cannot decode (backend=redis, key='chat:1')"
    assert error.key == "chat:1"
    assert error.backend == "redis"
    assert error.message == "cannot decode"


def test_key_is_shown_with_repr_so_odd_keys_stay_readable() -> None:
    error = StorageError("failed", key="line\nbreak ", backend="file")
    assert "key='line\\nbreak '" in str(error)
    assert "\n" not in str(error)


def test_whole_storage_errors_name_only_the_backend() -> None:
    assert str(StorageUnavailable("connection refused", backend="postgres")) == (
        "connection refused (backend=postgres)"
    )
    assert str(StorageError("plain")) == "plain"
    assert StorageError("plain").key is None


def test_serialization_error_is_caught_as_type_error() -> None:
    with pytest.raises(TypeError) as info:
        raise SerializationError("cannot encode set", key="k", backend="memory")
    assert isinstance(info.value, StorageError)
    assert info.value.key == "k"


def test_config_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError):
        raise ConfigError("unknown scheme")
