-- Each request takes the next line of a file (a code or a refresh token) and puts it into a body template.
-- Environment: BENCH_LINES (file), BENCH_PATH, BENCH_TEMPLATE (with %s for the line), BENCH_CONTENT_TYPE,
-- BENCH_AUTH (optional Authorization header), BENCH_LAST (file that receives the last 200 body).
local lines, i = {}, 0
local path = os.getenv("BENCH_PATH")
local template = os.getenv("BENCH_TEMPLATE")
local headers = { ["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") }
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then headers["Authorization"] = auth end
last_ok = nil

for line in io.lines(os.getenv("BENCH_LINES")) do lines[#lines + 1] = line end

request = function()
  i = i + 1
  local line = lines[i] or "exhausted"
  return wrk.format("POST", path, headers, string.format(template, line))
end

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
