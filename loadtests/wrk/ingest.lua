-- wrk: POST one unique record per request (loadtests/bench.py). AUTH (optional) is sent as a
-- bearer key; bare servers ignore it, so every target receives the same bytes.
local counter = 0
local tag = ""

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  tag = string.format("%06x", math.random(0, 0xffffff))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local auth = os.getenv("AUTH")
  if auth and #auth > 0 then wrk.headers["Authorization"] = "Bearer " .. auth end
end

-- ORDERS (1 or 2, default 2) orders a record, CUSTOMERS (default 10000) customers in turn.
-- scripts/emulators/bench.sh sends ORDERS=1 CUSTOMERS=64: one order, the record shape its
-- ceiling (examples/publish_ceiling.rs) publishes.
local orders = tonumber(os.getenv("ORDERS") or "2")
local customers = tonumber(os.getenv("CUSTOMERS") or "10000")
assert(orders == 1 or orders == 2, "ORDERS is 1 or 2")
local format = orders == 1
  and '{"customerId":"bench-%d","name":"Bench Customer %d","orders":[{"orderId":"%s-%d-1","total":50.0}],"revenue":50.0}'
  or '{"customerId":"bench-%d","name":"Bench Customer %d","orders":[{"orderId":"%s-%d-1","total":50.0},{"orderId":"%s-%d-2","total":2000.0}],"revenue":2050.0}'

function request()
  counter = counter + 1
  local c = counter % customers
  -- string.format ignores the arguments a one-order format does not use.
  return wrk.format(nil, nil, nil, string.format(format, c, c, tag, counter, tag, counter))
end

-- Pacing for the end-to-end measurement at a fixed share of the maximum: DELAY_MS between a
-- connection's answer and its next request (wrk calls delay() when it is defined).
local pace = tonumber(os.getenv("DELAY_MS") or "0")
if pace > 0 then
  function delay() return pace end
end
