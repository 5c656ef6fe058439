-- Shared helpers, prepended to every coordination script (docs/coordination.md).
-- Time always comes from Redis (TIME), never from a gateway: one clock for every lease.
-- Redis >= 5 replicates scripts by their effects, so reading TIME before writing is safe.

local function clock()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec * 1000000 + usec
end

-- Integers as exact decimal strings (Lua's tostring switches to %.14g, losing digits).
local function istr(n)
  return string.format('%.0f', n)
end

-- The epoch names one lifetime of this Redis's data. If it is missing, the data is gone
-- (restart without persistence, failover, flush) or this is a brand-new Redis: start a new
-- epoch whose admission opens only after the barrier, so that every gateway has time to
-- re-assert its live leases before anyone admits new calls.
local function epoch(key, now, now_us, barrier_ms)
  local id = redis.call('HGET', key, 'id')
  if id then
    return id, tonumber(redis.call('HGET', key, 'ready_at'))
  end
  id = istr(now_us)
  local ready = now + barrier_ms
  redis.call('HSET', key, 'id', id, 'ready_at', istr(ready))
  return id, ready
end

-- Fencing tokens: strictly increasing, and never below Redis time in microseconds, so the
-- tokens issued after a data loss are still larger than every token issued before it.
local function next_token(key, now_us)
  local last = tonumber(redis.call('GET', key) or '0')
  local token = math.max(last + 1, now_us)
  redis.call('SET', key, istr(token))
  return token
end

-- Lease records: HASH tenant, instance, token, state (reserved|live|released), prev.
local function record(key)
  return redis.call('HMGET', key, 'tenant', 'instance', 'token', 'state', 'prev')
end

local function store(lease_key, call_key, call_id, deadline, fields)
  redis.call('ZADD', lease_key, deadline, call_id)
  redis.call('DEL', call_key)
  redis.call('HSET', call_key, unpack(fields))
  redis.call('PEXPIREAT', call_key, istr(deadline))
end

