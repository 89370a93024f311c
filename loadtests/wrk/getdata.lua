-- wrk: GET getData with the default query (the newest 10 records). AUTH as in ingest.lua.
function init(args)
  local auth = os.getenv("AUTH")
  if auth and #auth > 0 then wrk.headers["Authorization"] = "Bearer " .. auth end
end
