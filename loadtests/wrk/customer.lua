-- wrk: GET getData?customerId=<one of the 10,000 seeded customers>, a different one each time.
local base = wrk.path
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  local auth = os.getenv("AUTH")
  if auth and #auth > 0 then wrk.headers["Authorization"] = "Bearer " .. auth end
end

function request()
  return wrk.format("GET", base .. "?customerId=seed-c" .. math.random(0, 9999))
end
