"""Provider simulator: OpenAI, Azure OpenAI, Anthropic, Gemini or Bedrock wire format with scriptable faults."""

from megarouter.sim.server import SimSettings, add_arguments, build_app, run

__all__ = ["SimSettings", "add_arguments", "build_app", "run"]
