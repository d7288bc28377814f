-- wrk script: spread requests over many hosts.
--   wrk ... -s hosts.lua http://127.0.0.1:PORT/ -- HOSTS DIST [ZIPF_S]
-- HOSTS: hosts site0.bench.example .. site<HOSTS-1>.bench.example (all in every table);
-- DIST: "uniform", or "zipf" (host i drawn with probability ∝ 1/(i+1)^s, s = ZIPF_S, default 1).
-- done() prints one line "JSON {...}" that bench.py parses.

local hosts, dist, s = 1000, "uniform", 1.0
local cdf, guide, n

function init(args)
  hosts = tonumber(args[1] or hosts)
  dist = args[2] or dist
  s = tonumber(args[3] or s)
  -- every thread draws a different sequence
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
  if dist == "zipf" then
    cdf, n = {}, hosts
    local sum = 0
    for i = 1, n do sum = sum + 1 / i ^ s; cdf[i] = sum end
    for i = 1, n do cdf[i] = cdf[i] / sum end
    cdf[n] = 1
    -- guide[j]: the first i with cdf[i] >= j / n, where the search for any u in
    -- [j / n, (j + 1) / n) starts: O(1) per pick on average, so that drawing a host costs the
    -- load generator no more than a uniform pick (it shares the cores with the contenders)
    guide = {}
    local i = 1
    for j = 0, n - 1 do
      while cdf[i] < j / n do i = i + 1 end
      guide[j] = i
    end
  end
end

local function pick()
  if dist ~= "zipf" then return math.random(0, hosts - 1) end
  local u = math.random()
  local i = guide[math.floor(u * n)]
  while cdf[i] < u do i = i + 1 end
  return i - 1
end

function request()
  return wrk.format("GET", "/", { Host = "site" .. pick() .. ".bench.example" })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_p50_us":%d,' ..
    '"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
