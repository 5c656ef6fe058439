-- SEND: append a command to the stream of the instance that owns the call, if it still
-- owns it (the caller read the owner just before; 'moved' makes it read again).
-- KEYS: 1 call record, 2 command stream of the expected owner
-- ARGV: 1 expected owner, 2 call id, 3 command, 4 reason ('' = none), 5 max length,
--       6 stream ttl ms
-- Returns {'sent'} | {'absent'} | {'moved', owner}
local rec = record(KEYS[1])
if not rec[2] or rec[4] == 'released' then
  return {'absent'}
end
if rec[2] ~= ARGV[1] then
  return {'moved', rec[2]}
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'call_id', ARGV[2], 'command', ARGV[3], 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {'sent'}
