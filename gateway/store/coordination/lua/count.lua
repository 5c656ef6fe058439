-- COUNT: unexpired leases of a tenant (read-only).
-- KEYS: 1 lease zset
local now = clock()
return redis.call('ZCOUNT', KEYS[1], '(' .. istr(now), '+inf')
