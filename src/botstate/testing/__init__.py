"""The conformance suite: the storage contract as tests, for built-in and third-party backends.

Subclass :class:`StorageConformance` in a test module and give it one fixture, ``storage_factory``,
returning a callable that builds a (not yet started) storage at one fixed location for the test,
passing keyword options (``default_ttl``, ``codec``, ``sweep_interval``) through::

    from botstate.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        persistent = True  # a new instance at the same location sees the data

        @pytest.fixture
        def storage_factory(self, tmp_path):
            return lambda **options: MyStorage(tmp_path / "db", **options)

Tests of a capability the storage lacks are skipped, naming it, so an adapter with only the four
``Storage`` methods runs what applies to it; ``full_contract = True`` also asserts every capability.

Needs ``pytest`` and ``pytest-asyncio`` (``pip install 'botstate[testing]'``).
"""

from .conformance import StorageConformance, SwitchableCodec

__all__ = ["StorageConformance", "SwitchableCodec"]
