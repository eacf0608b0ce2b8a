"""Talks to people: the trellis CLI, the HTTP API and web page, and the Python API (`app.library`).

Importing `app` chooses torch's thread wait policy before anything here loads torch, so the CLI, the server
and the Python API run their models alike (`lm.device.prepare_cpu_threads`)."""

from lm.device import prepare_cpu_threads

prepare_cpu_threads()
