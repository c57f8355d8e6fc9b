"""Codecs between each input API and the canonical OpenAI chat shape."""
