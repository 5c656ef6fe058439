-- HIT: fixed-window rate limit; refused hits are not counted.
-- KEYS: 1 counter
-- ARGV: 1 limit, 2 window ms
-- Returns {allowed (0|1), remaining, ms until the window ends}
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  redis.call('SET', KEYS[1], 1, 'PX', window)
  return {1, limit - 1, window}
end
local hits = tonumber(redis.call('GET', KEYS[1]))
if hits >= limit then
  return {0, 0, ttl}
end
return {1, limit - redis.call('INCR', KEYS[1]), ttl}
