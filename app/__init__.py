"""Talks to people: the trellis CLI, the HTTP API and web page, and the Python API (`app.library`)."""
