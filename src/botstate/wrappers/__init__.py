"""Storage wrappers: each takes a storage and is one, so they stack and work over any backend.

- :func:`namespace` / :class:`Namespace`: a view under a key prefix, to share one store;
- :func:`enhance_storage`: versioned envelopes with migrations and an absolute expiry.
"""

from .enhance import EnhancedStorage, enhance_storage
from .namespace import Namespace, namespace

__all__ = ["EnhancedStorage", "Namespace", "enhance_storage", "namespace"]
