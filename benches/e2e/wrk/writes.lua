-- wrk script: write throughput through an update API; every request changes one host.
--   wrk ... -s writes.lua URL -- KIND HOSTS TOKEN
-- KIND "set-backend": POST /entries.json {"host","backend"} with the bearer TOKEN;
-- KIND "lua": GET /set?host=H&backend=B on the lua contender's update endpoint.
-- Backends are 127.0.0.1:<port> for a few ports; hosts are drawn from the HOSTS loaded ones.
local kind, hosts, token, ports

function init(args)
  kind, hosts, token = args[1], tonumber(args[2]), args[3]
  ports = { args[4], args[5], args[6], args[7] }
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end

function request()
  local h = "site" .. math.random(0, hosts - 1) .. ".bench.example"
  local b = "127.0.0.1:" .. ports[math.random(1, 4)]
  if kind == "lua" then
    return wrk.format("GET", "/set?host=" .. h .. "&backend=" .. b)
  end
  return wrk.format("POST", "/entries.json", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, '{"host":"' .. h .. '","backend":"' .. b .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
