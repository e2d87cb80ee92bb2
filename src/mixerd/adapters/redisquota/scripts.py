"""The Redis Lua scripts that count quota atomically, and how their replies are read (pure).

Both scripts take the same arguments::

    KEYS[1]  window state (a hash)
    KEYS[2]  units used (fixed) / closed buckets (rolling, a sorted set)
    KEYS[3]  the answer kept for a deduplication id (only with one)
    ARGV     credit (max amount), window ms, bucket ms, best effort (0|1), amount, now ms, dedup id

and reply ``{granted, valid ms, remaining (-1: unknown), reset ms, deduplicated (0|1)}``.

Time is always an argument (the caller's clock, milliseconds since the epoch): the scripts never
call Redis ``TIME``, so tests with a manual clock are deterministic. Milliseconds keep every
number below 2^53, exact in Lua's doubles (Mixer passed nanoseconds, which are not). Numbers
written back are formatted with ``%.0f`` so they never turn into ``1.7e+12``.

:data:`BATCH` runs many allocations in one call (one server and Sentinel; see
:func:`batch_command`): each is one of the two scripts above, run as a function of its own keys
and arguments, so its semantics are theirs; an allocation whose commands fail (a key of the
wrong type) answers its own error in the reply array and the others go on.

The keys are named by :func:`mixerd.adapters.redisquota.dims.bucket_keys` (``<key>.meta``,
``<key>.data``, ``<dedup id>-<key>.meta``; on a Redis Cluster ``{<key>}.meta`` and so on, one hash
slot per bucket). The deduplication key is passed in ``KEYS`` (not built inside the script) so
every key a script touches is declared, as Redis requires for scripts, and a cluster can route the
call to the node that holds them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any, Final

import hiredis

from mixerd.adapter import Code, QuotaResult, Status

__all__ = [
    "BATCH",
    "EXHAUSTED",
    "FIXED_WINDOW",
    "ROLLING_WINDOW",
    "BatchCall",
    "batch_command",
    "script_result",
]

EXHAUSTED: Final = Status(Code.RESOURCE_EXHAUSTED, "redisquota: Resource exhausted")

_PRELUDE: Final = """
local credit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local bucket = tonumber(ARGV[3])
local best_effort = ARGV[4] == "1"
local amount = tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local dedup = ARGV[7] ~= ""

local function int(x)
  return string.format("%.0f", x)
end

-- a retry with a known deduplication id gets the earlier answer while that answer is valid
if dedup then
  local seen = redis.call("HMGET", KEYS[3], "amount", "expire")
  local seen_amount, seen_expire = tonumber(seen[1]), tonumber(seen[2])
  if seen_amount ~= nil and seen_expire ~= nil and seen_expire > now then
    return {seen_amount, seen_expire - now, -1, seen_expire - now, 1}
  end
end

local function remember(granted, expire)
  if dedup then
    redis.call("HSET", KEYS[3], "amount", int(granted), "expire", int(expire))
    redis.call("PEXPIRE", KEYS[3], int(expire - now))
  end
end
"""

FIXED_WINDOW: Final = (
    _PRELUDE
    + """
-- <key>.meta {expire}: when the current window ends; <key>.data: units used in it
local expire = tonumber(redis.call("HGET", KEYS[1], "expire"))
local used = 0
if expire == nil or expire <= now then
  expire = now + window
  redis.call("HSET", KEYS[1], "expire", int(expire))
  redis.call("SET", KEYS[2], 0)
  redis.call("PEXPIRE", KEYS[1], int(window))
  redis.call("PEXPIRE", KEYS[2], int(window))
else
  used = tonumber(redis.call("GET", KEYS[2])) or 0
end

local available = credit - used
if available < 0 then
  available = 0
end
local granted = amount
if granted > available then
  if not best_effort then
    return {0, 0, available, expire - now, 0}
  end
  granted = available
end
if granted > 0 then
  redis.call("INCRBY", KEYS[2], int(granted))
end
remember(granted, expire)
return {granted, expire - now, available - granted, expire - now, 0}
"""
)

ROLLING_WINDOW: Final = (
    _PRELUDE
    + """
-- <key>.meta {used, bucket.amount, bucket.start}: units in the window and the open bucket;
-- <key>.data: closed buckets, member "<start>:<amount>" scored by start. A bucket's units come
-- back once its start is a whole window old.
local meta = redis.call("HMGET", KEYS[1], "used", "bucket.amount", "bucket.start")
local used = tonumber(meta[1]) or 0
local open_amount = tonumber(meta[2]) or 0
local open_start = tonumber(meta[3])
local changed = false
if open_start == nil then
  open_start = now
  changed = true
end

if open_start + bucket <= now then
  if open_amount > 0 then
    redis.call("ZADD", KEYS[2], int(open_start), int(open_start) .. ":" .. int(open_amount))
  end
  open_amount = 0
  open_start = now
  changed = true
end

local horizon = int(now - window)
local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", horizon)
if #expired > 0 then
  for _, member in ipairs(expired) do
    used = used - (tonumber(string.match(member, ":(%d+)$")) or 0)
  end
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", horizon)
  changed = true
end
if used < 0 then
  used = 0
end

local available = credit - used
if available < 0 then
  available = 0
end
local granted = amount
local denied = false
if granted > available then
  if best_effort then
    granted = available
  else
    granted = 0
    denied = true
  end
end
if granted > 0 then
  used = used + granted
  open_amount = open_amount + granted
  changed = true
end
-- state moves forward even when the request is denied, so reclaimed units are never lost
if changed then
  redis.call("HSET", KEYS[1], "used", int(used),
    "bucket.amount", int(open_amount), "bucket.start", int(open_start))
  redis.call("PEXPIRE", KEYS[1], int(window))
  redis.call("PEXPIRE", KEYS[2], int(window))
end

local oldest = nil
local first = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
if #first > 0 then
  oldest = tonumber(first[2])
elseif open_amount > 0 then
  oldest = open_start
end
local reset = 0
if oldest ~= nil then
  reset = oldest + window - now
  if reset < 0 then
    reset = 0
  end
end

if denied then
  return {0, 0, available, reset, 0}
end
remember(granted, now + window)
return {granted, window, available - granted, reset, 0}
"""
)


def _function(name: str, body: str) -> str:
    # KEYS and ARGV as parameters shadow the globals, so the body reads its own
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


BATCH: Final = (
    _function("fixed_window", FIXED_WINDOW)
    + _function("rolling_window", ROLLING_WINDOW)
    + """
-- ARGV[1]: the number of allocations; then per allocation: algorithm (0 fixed, 1 rolling),
-- its number of keys and its 7 arguments. KEYS: every allocation's keys, in order.
local out = {}
local k, a = 1, 2
for i = 1, tonumber(ARGV[1]) do
  local algorithm, nkeys = ARGV[a], tonumber(ARGV[a + 1])
  local keys = {}
  for j = 1, nkeys do
    keys[j] = KEYS[k + j - 1]
  end
  k = k + nkeys
  local args = {ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]}
  a = a + 9
  local ok, reply = pcall(algorithm == "1" and rolling_window or fixed_window, keys, args)
  if ok then
    out[i] = reply
  else
    out[i] = redis.error_reply(type(reply) == "table" and reply.err or tostring(reply))
  end
end
return out
"""
)
"""Many allocations in one call: see :func:`batch_command`."""

BatchCall = tuple[int, Sequence[str], tuple[int, int, int, int, int], str]
"""One allocation: algorithm (0 fixed window, 1 rolling window), keys, the script's first five
arguments (credit, window ms, bucket ms, best effort, amount) and the deduplication id; the
time (``now``) is the batch's."""


def batch_command(sha: str, calls: Sequence[BatchCall], now_ms: int) -> bytes:
    """The ``EVALSHA`` of :data:`BATCH` (whose SHA1 is ``sha``) for ``calls`` at ``now_ms``, as
    Redis protocol bytes; its reply holds one script reply (or error) per call, in order."""
    keys: list[str] = []
    argv: list[int | str] = [len(calls)]
    for algorithm, call_keys, head, dedup_id in calls:
        keys.extend(call_keys)
        argv.append(algorithm)
        argv.append(len(call_keys))
        argv.extend(head)
        argv.append(now_ms)
        argv.append(dedup_id)
    # (hiredis types its argument as a tuple of one element)
    return bytes(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *argv)))  # type: ignore[arg-type]


def script_result(raw: Any, limit: int, window: _dt.timedelta | None = None) -> QuotaResult:
    """A script's reply as the handler's answer (what ``ScriptReply.parse(raw).result(...)``
    gives, in one step); ValueError when it is not what the scripts return."""
    try:
        granted, valid_ms, remaining, reset_ms, dedup = raw
    except (TypeError, ValueError):
        raise ValueError(f"unexpected reply from the quota script: {raw!r}") from None
    if not (type(granted) is int and type(valid_ms) is int and type(remaining) is int) or not (
        type(reset_ms) is int and type(dedup) is int
    ):
        raise ValueError(f"unexpected reply from the quota script: {raw!r}")
    reset = _dt.timedelta(milliseconds=reset_ms if reset_ms > 0 else 0)
    if granted <= 0:
        return QuotaResult(
            status=EXHAUSTED,
            limit=limit,
            remaining=None if remaining < 0 else remaining,
            reset_after=reset,
            window=window,
        )
    return QuotaResult(
        valid_duration=reset if valid_ms == reset_ms else _dt.timedelta(milliseconds=max(0, valid_ms)),
        amount=granted,
        limit=limit,
        remaining=None if remaining < 0 else remaining,
        reset_after=reset,
        window=window,
    )
