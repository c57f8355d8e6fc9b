-- Shared by the bench scripts: count non-2xx responses per thread and print
-- one machine-readable line at the end, so proxy_bench.py never has to parse
-- wrk's human-readable summary.
--
--   BENCH_RESULT {"requests": ..., "non2xx": ..., "latency_us": {"p50": ...}, ...}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Runs in each thread's own Lua state. Defining response() makes wrk hand us
-- every response; the cost is small next to the proxy's, and it is the only
-- way to count 3xx/1xx as errors too (wrk's own status count is >= 400 only).
non2xx = 0

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + thread:get("non2xx")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, non2xx_total,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
