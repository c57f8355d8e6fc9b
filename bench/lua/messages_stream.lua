-- POST a streaming Anthropic Messages request. Straight to the upstream it is
-- the baseline for the stream-anthropic workload: the body is what the proxy
-- sends for chat_stream.lua's request (Anthropic streams always report usage,
-- so there is no stream_options). To the proxy's /v1/messages it is the client
-- request of messages-anthropic-stream (passed through) and
-- messages-openai-stream (translated to a chat stream and back). Key and model
-- come from the environment (proxy_bench.py sets BENCH_API_KEY to the proxy's
-- key and BENCH_MODEL per run); the static upstream checks no key or header.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY") or "sk-bench"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model": "' .. (os.getenv("BENCH_MODEL") or "claude-sonnet-4-5") .. '", ' ..
  '"max_tokens": 64, ' ..
  '"messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello and offer to help."}]}], ' ..
  '"system": [{"type": "text", "text": "You are a helpful assistant."}], ' ..
  '"temperature": 0.7, "stream": true}'
