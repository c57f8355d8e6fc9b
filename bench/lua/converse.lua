-- POST a small Bedrock Converse request. Straight to the Bedrock simulator it
-- is the baseline of the json-bedrock workload (URL .../model/<id>/converse)
-- and of stream-bedrock (.../converse-stream: ConverseStream takes the same
-- body, the operation is the path). The body is what the proxy sends for
-- chat_json.lua's and chat_stream.lua's request (system prompt lifted to
-- `system`, content as text blocks, max_tokens and temperature in
-- inferenceConfig; the model is in the URL, not the body). It is unsigned:
-- SigV4 is beyond a wrk script, so proxy_bench.py runs the simulator open,
-- and the proxy's requests carry their signature headers unchecked.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messages": [{"role": "user", "content": [{"text": "Say hello and offer to help."}]}], ' ..
  '"system": [{"text": "You are a helpful assistant."}], ' ..
  '"inferenceConfig": {"maxTokens": 64, "temperature": 0.7}}'
