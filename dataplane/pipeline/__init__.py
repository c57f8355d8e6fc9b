"""One request path for every API.

    auth -> parse/validate -> resolve -> route (candidates -> filters -> strategy -> plan)
         -> charge -> failover -> relay -> settle

`Pipeline.run` runs the stages; an `Operation` (dataplane/operations/) supplies
only what differs between APIs — how the caller authenticates, how its body
is validated, what it needs from a model, which translator serves it on each
endpoint, and the shape its errors leave in. So data residency, outlier
ejection, health ordering, strategies, budgets, quotas, usage, explain
headers and metrics hold for chat, completions, embeddings, responses and
messages by construction: no API has a path of its own to forget one on.
"""
