"""The web console: sign-in (SSO, self-service sign-up, operator tokens), API keys, usage,
budgets, routes, the fleet and the org tree — server-rendered HTML over the admin API.

It is *just another client of the admin gRPC API* and holds no privileges of its own: each
page and action runs with the signed-in person's session credential, so the control plane's
RBAC decides what they see and do. Its own credential (role `console`) can only trade an ID
token that the control plane verifies itself for a session. Like `megarouter/`, it imports
neither plane.
"""
