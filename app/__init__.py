"""Talks to people: the trellis CLI, and later the HTTP API and web page."""
