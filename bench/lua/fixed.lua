-- The same request every time. Environment: BENCH_METHOD, BENCH_PATH, BENCH_BODY, BENCH_CONTENT_TYPE,
-- BENCH_AUTH (optional Authorization header), BENCH_LAST (file that receives the last 200 body).
local headers = {}
local ct = os.getenv("BENCH_CONTENT_TYPE")
if ct and ct ~= "" then headers["Content-Type"] = ct end
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then headers["Authorization"] = auth end
local req = wrk.format(os.getenv("BENCH_METHOD"), os.getenv("BENCH_PATH"), headers, os.getenv("BENCH_BODY"))
last_ok = nil

request = function() return req end

response = function(status, _, body)
  if status == 200 then last_ok = body end
end

-- done() runs in the main Lua state: read each thread's last_ok through the handles setup() kept.
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end

done = function()
  local body = ""
  for _, thread in ipairs(threads) do body = thread:get("last_ok") or body end
  local f = io.open(os.getenv("BENCH_LAST"), "w")
  f:write(body)
  f:close()
end
