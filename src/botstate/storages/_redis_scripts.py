"""The Lua scripts behind RedisStorage's atomic operations.

Each script touches one key, or two keys sharing a hash tag, so every one of them runs unchanged
on Redis Cluster. Scripts are sent by SHA (``EVALSHA``) and re-sent in full only when the server
does not know them yet (``NOSCRIPT``).
"""

from __future__ import annotations

import hashlib

__all__ = [
    "CAS",
    "INCREMENT",
    "LOCK_ACQUIRE",
    "LOCK_EXTEND",
    "LOCK_RELEASE",
    "SET_MANY",
    "Script",
    "TOUCH_PERSIST",
]


class Script:
    """A Lua script and its SHA1, computed once."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


CAS = Script(
    """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current ~= ARGV[1] then return current end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
)
"""KEYS: key. ARGV: expected bytes, new bytes, ttl ms or ''.

Returns 1 when written, 0 when the key is absent, or the stored bytes when they differ from the
expected ones: the caller then decides whether they hold an equal value (a dict in another order)
and retries with those exact bytes. The common case stays one round trip.
"""

INCREMENT = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '0', 'PX', ARGV[2])
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
"""
)
"""KEYS: counter. ARGV: amount, ttl ms. Only used with a TTL (plain ``INCRBY`` otherwise).

The TTL is set only when the counter is created, so a window is fixed, not extended by every hit.
The total is returned as the stored decimal text: Lua numbers are doubles and would round
counters beyond 2**53.
"""

SET_MANY = Script(
    """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  if ttl == '' then
    redis.call('SET', key, ARGV[i + 1])
  else
    redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
  end
end
return #KEYS
"""
)
"""KEYS: the keys. ARGV: ttl ms or '', then one value per key.

One atomic command for a whole ``set_many`` with a TTL (``MSET`` cannot set expiries). On a
cluster it runs once per hash slot, the keys of one slot being all a script may touch there.
"""

TOUCH_PERSIST = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""
)
"""KEYS: key. ``PERSIST`` alone answers 0 both for a missing key and for one without expiry."""

LOCK_ACQUIRE = Script(
    """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return token
"""
)
"""KEYS: lock, token counter (same hash tag). ARGV: owner id, lease ms, counter ms.

Returns the fencing token, or 0 when someone else holds the lock. The counter is seeded with the
server's time in microseconds when it is created, so it may expire after a quiet period without
ever handing out a smaller token than before.
"""

LOCK_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
"""KEYS: lock. ARGV: owner id. Deletes the lock only if this owner still holds it."""

LOCK_EXTEND = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)
"""KEYS: lock. ARGV: owner id, lease ms. Renews the lease only if this owner still holds it."""
