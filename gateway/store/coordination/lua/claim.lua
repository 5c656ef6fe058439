-- CLAIM: the instance that accepted the media stream takes the lease over.
-- KEYS: 1 lease zset, 2 call record, 3 fence, 4 epoch
-- ARGV: 1 tenant, 2 call id, 3 instance, 4 token, 5 ttl ms, 6 barrier ms
-- Returns {'ok', token, instance} | {'gone'} | {'fenced'} | {'warming', ms left}
local now, now_us = clock()
local _, ready = epoch(KEYS[4], now, now_us, tonumber(ARGV[6]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local rec = record(KEYS[2])
if rec[1] ~= ARGV[1] or rec[4] == 'released' or not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if now < ready then
    return {'warming', ready - now}  -- its owner may not have re-asserted it yet
  end
  return {'gone'}
end
if rec[3] == ARGV[4] then
  -- The current holder hands over: a fresh token fences the old one out.
  local token = next_token(KEYS[3], now_us)
  store(KEYS[1], KEYS[2], ARGV[2], now + tonumber(ARGV[5]),
    {'tenant', ARGV[1], 'instance', ARGV[3], 'token', istr(token), 'state', 'live',
     'prev', ARGV[4]})
  return {'ok', token}
end
if rec[5] == ARGV[4] and rec[2] == ARGV[3] then
  return {'ok', tonumber(rec[3])}  -- our own claim, retried
end
return {'fenced'}
