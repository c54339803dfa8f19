-- The full Neucron flow: POST /oauth/authorize, then POST /oauth/token with the code it returned.
-- Environment: BENCH_USER_TOKEN, BENCH_AUTHORIZE_BODY, BENCH_KEY_ID, BENCH_KEY_SECRET, BENCH_LAST.
local codes, head = {}, 1
local auth_req = wrk.format("POST", "/oauth/authorize",
  { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_USER_TOKEN") },
  os.getenv("BENCH_AUTHORIZE_BODY"))
local key_id, key_secret = os.getenv("BENCH_KEY_ID"), os.getenv("BENCH_KEY_SECRET")
last_ok = nil

request = function()
  if head <= #codes then
    local code = codes[head]
    codes[head] = nil
    head = head + 1
    local body = string.format('{"token":{"auth_code":"%s","key_id":"%s","key_secret":"%s"}}', code, key_id, key_secret)
    return wrk.format("POST", "/oauth/token", { ["Content-Type"] = "application/json" }, body)
  end
  return auth_req
end

response = function(status, _, body)
  if status ~= 200 then return end
  local code = body:match('"code":"([^"]+)"')
  if code then
    codes[#codes + 1] = code
  elseif body:find('"access_token"') then
    last_ok = body
  end
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
