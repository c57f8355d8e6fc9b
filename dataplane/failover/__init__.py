"""Failover: the attempt loop, retry budgets and outlier ejection.

  policy.py   a route's failover settings, resolved from the table
  budget.py   per-endpoint retry budgets (token buckets)
  outlier.py  ejection of failing endpoints, Retry-After cool-downs, probes
  engine.py   the attempt loop that walks a routing plan
"""
