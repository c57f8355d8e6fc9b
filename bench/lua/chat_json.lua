-- POST a small non-streaming chat completion: the proxy relays a JSON body.
-- The API key comes from the environment (proxy_bench.py sets it).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "sk-bench")
wrk.body = '{"model": "' .. (os.getenv("BENCH_MODEL") or "bench-model") .. '", ' ..
  '"messages": [{"role": "system", "content": "You are a helpful assistant."}, ' ..
  '{"role": "user", "content": "Say hello and offer to help."}], ' ..
  '"max_tokens": 64, "temperature": 0.7}'
