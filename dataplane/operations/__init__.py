"""The APIs the proxy serves, one `Operation` each over the shared pipeline.

    chat         POST /v1/chat/completions   OpenAI      (dataplane/operations/chat.py)
    completions  POST /v1/completions        OpenAI      (completions.py)
    embeddings   POST /v1/embeddings         OpenAI      (embeddings.py)
    responses    POST /v1/responses          OpenAI      (responses.py)
    messages     POST /v1/messages           Anthropic   (messages.py)
"""
