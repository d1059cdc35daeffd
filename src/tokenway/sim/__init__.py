"""Simulated providers: real HTTP servers speaking the OpenAI, Anthropic and Gemini protocols.

Used by the demo (`tokenway serve` with no config), by `tokenway sim` and by the test suite.
Behaviour (latency, reply length, rate limits, faults, prefix cache) comes from a
`tokenway.config.schema.SimScenario`.
"""

from tokenway.sim.run import serve_forever, start_sims
from tokenway.sim.server import ReceivedRequest, SimServer

__all__ = ["ReceivedRequest", "SimServer", "serve_forever", "start_sims"]
