"""Decides: the LangGraph agent that routes, retrieves, arbitrates and answers."""
