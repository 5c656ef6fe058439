-- RENEW / RE-ASSERT: the holder of a lease pushes its deadline ahead; a missing lease is
-- put back regardless of the limit (the call is real), an older token is replaced, a
-- newer token wins.
-- KEYS: 1 lease zset, 2 call record, 3 fence, 4 epoch
-- ARGV: 1 tenant, 2 call id, 3 instance, 4 token, 5 state, 6 ttl ms, 7 barrier ms
-- Returns {status, epoch id}, status one of renewed | reasserted | fenced | released
local now, now_us = clock()
local id = epoch(KEYS[4], now, now_us, tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine = tonumber(ARGV[4])
local deadline = now + tonumber(ARGV[6])
local rec = record(KEYS[2])
if rec[1] then
  local current = tonumber(rec[3])
  if rec[1] ~= ARGV[1] or current > mine then
    return {'fenced', id}
  end
  if rec[4] == 'released' then
    return {'released', id}
  end
  if current == mine and redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[2])
    redis.call('PEXPIREAT', KEYS[2], istr(deadline))
    return {'renewed', id}
  end
end
store(KEYS[1], KEYS[2], ARGV[2], deadline,
  {'tenant', ARGV[1], 'instance', ARGV[3], 'token', ARGV[4], 'state', ARGV[5]})
-- Tokens issued from now on must stay above the ones gateways bring back.
if tonumber(redis.call('GET', KEYS[3]) or '0') < mine then
  redis.call('SET', KEYS[3], ARGV[4])
end
return {'reasserted', id}
