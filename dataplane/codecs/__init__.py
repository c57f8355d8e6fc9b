"""Wire codecs shared by every translator: server-sent events, and the OpenAI
shapes (usage, finish reasons, tool calls, data URLs) several formats map to."""
