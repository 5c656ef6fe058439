-- EPOCH: the current data epoch (started now, with its barrier, if Redis lost its data).
-- Gateways call it every renew cycle, so an instance holding only reservations (or
-- nothing) still learns of a data loss within one cycle.
-- KEYS: 1 epoch
-- ARGV: 1 barrier ms
local now, now_us = clock()
local id = epoch(KEYS[1], now, now_us, tonumber(ARGV[1]))
return id
