-- RESERVE: take a slot for a call being answered.
-- KEYS: 1 lease zset of the tenant, 2 call record, 3 fence, 4 epoch
-- ARGV: 1 tenant, 2 call id, 3 instance, 4 limit (-1 = none), 5 ttl ms, 6 barrier ms,
--       7 the epoch id the caller has re-asserted its leases in
-- Returns {'epoch', id} | {'warming', id, ms left} | {'conflict'} | {'full', active}
--       | {'exists', token, instance, state, active} | {'ok', token, active}
local now, now_us = clock()
local id, ready = epoch(KEYS[4], now, now_us, tonumber(ARGV[6]))
if id ~= ARGV[7] then
  return {'epoch', id}  -- this instance must re-assert its own leases first
end
if now < ready then
  return {'warming', id, ready - now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local active = redis.call('ZCARD', KEYS[1])
local rec = record(KEYS[2])
if rec[1] then
  if rec[1] ~= ARGV[1] or rec[4] ~= 'reserved' then
    return {'conflict'}  -- another tenant's call, or one already live or ended
  end
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return {'exists', tonumber(rec[3]), rec[2], rec[4], active}  -- a retried webhook
  end
end
local limit = tonumber(ARGV[4])
if limit >= 0 and active >= limit then
  return {'full', active}
end
local token = next_token(KEYS[3], now_us)
store(KEYS[1], KEYS[2], ARGV[2], now + tonumber(ARGV[5]),
  {'tenant', ARGV[1], 'instance', ARGV[3], 'token', istr(token), 'state', 'reserved'})
return {'ok', token, active + 1}
