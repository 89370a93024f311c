-- wrk: 90 % GET getData (the default query, then a customer's page), 10 % POST one unique
-- record: the mixed run of loadtests/bench.py, where the cache serves reads while commits
-- keep invalidating it. AUTH as in ingest.lua.
local counter = 0
local tag = ""
local post_headers = {}
local get_headers = {}

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  tag = string.format("%06x", math.random(0, 0xffffff))
  local auth = os.getenv("AUTH")
  if auth and #auth > 0 then
    post_headers["Authorization"] = "Bearer " .. auth
    get_headers["Authorization"] = "Bearer " .. auth
  end
  post_headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  if counter % 10 == 0 then
    local body = string.format(
      '{"customerId":"bench-%d","name":"Bench Customer %d","orders":[{"orderId":"%s-%d-1","total":50.0}],"revenue":50.0}',
      counter % 100, counter % 100, tag, counter)
    return wrk.format("POST", "/challenge-latam-api/ingestData", post_headers, body)
  end
  if counter % 2 == 0 then
    return wrk.format("GET", "/challenge-latam-api/getData", get_headers)
  end
  return wrk.format("GET", "/challenge-latam-api/getData?customerId=bench-" .. (counter % 100), get_headers)
end
