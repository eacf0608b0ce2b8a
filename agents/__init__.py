"""Decides: the LangGraph agent that routes, retrieves, arbitrates and answers.

Importing `agents` chooses torch's thread wait policy before torch loads (`lm.device.prepare_cpu_threads`), so
an agent served by LangGraph's own server (`langgraph.json` loads `agents/graph.py`, not `app`) runs its model
as the CLI and `trellis serve` do."""

from lm.device import prepare_cpu_threads

prepare_cpu_threads()
