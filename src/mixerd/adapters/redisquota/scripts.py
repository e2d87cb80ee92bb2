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

The keys are named by :func:`mixerd.adapters.redisquota.dims.bucket_keys` (``<key>.meta``,
``<key>.data``, ``<dedup id>-<key>.meta``; on a Redis Cluster ``{<key>}.meta`` and so on, one hash
slot per bucket). The deduplication key is passed in ``KEYS`` (not built inside the script) so
every key a script touches is declared, as Redis requires for scripts, and a cluster can route the
call to the node that holds them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import Code, QuotaResult, Status

__all__ = ["EXHAUSTED", "FIXED_WINDOW", "ROLLING_WINDOW", "ScriptReply"]

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


@dataclass(frozen=True, slots=True)
class ScriptReply:
    granted: int
    valid_ms: int
    remaining: int | None
    reset_ms: int
    deduplicated: bool

    @classmethod
    def parse(cls, raw: Any) -> ScriptReply:
        """Read a script's reply; ValueError when it is not what the scripts return."""
        if not isinstance(raw, Sequence) or len(raw) != 5 or not all(isinstance(v, int) for v in raw):
            raise ValueError(f"unexpected reply from the quota script: {raw!r}")
        granted, valid_ms, remaining, reset_ms, dedup = raw
        return cls(granted, valid_ms, None if remaining < 0 else remaining, reset_ms, dedup == 1)

    def result(self, limit: int, window: _dt.timedelta | None = None) -> QuotaResult:
        reset = _dt.timedelta(milliseconds=max(0, self.reset_ms))
        if self.granted <= 0:
            return QuotaResult(
                status=EXHAUSTED, limit=limit, remaining=self.remaining, reset_after=reset, window=window
            )
        return QuotaResult(
            valid_duration=_dt.timedelta(milliseconds=max(0, self.valid_ms)),
            amount=self.granted,
            limit=limit,
            remaining=self.remaining,
            reset_after=reset,
            window=window,
        )
