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

function request()
  counter = counter + 1
  local body = string.format(
    '{"customerId":"bench-%d","name":"Bench Customer %d","orders":[{"orderId":"%s-%d-1","total":50.0},{"orderId":"%s-%d-2","total":2000.0}],"revenue":2050.0}',
    counter % 10000, counter % 10000, tag, counter, tag, counter)
  return wrk.format(nil, nil, nil, body)
end

-- Pacing for the end-to-end measurement at a fixed share of the maximum: DELAY_MS between a
-- connection's answer and its next request (wrk calls delay() when it is defined).
local pace = tonumber(os.getenv("DELAY_MS") or "0")
if pace > 0 then
  function delay() return pace end
end
