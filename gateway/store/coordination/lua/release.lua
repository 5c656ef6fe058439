-- RELEASE: free the slot, only for the current token (never a successor's lease).
-- The record stays as a tombstone for a while, so a renew that was already in flight
-- cannot bring the lease back.
-- KEYS: 1 lease zset, 2 call record
-- ARGV: 1 tenant, 2 call id, 3 token, 4 tombstone ms
-- Returns 1 if released, 0 if there was nothing of ours to release.
local rec = record(KEYS[2])
if rec[1] ~= ARGV[1] or rec[3] ~= ARGV[3] or rec[4] == 'released' then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'state', 'released')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
