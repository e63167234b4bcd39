"""Online workload: the Ray Serve app (OpenAI-compatible ingress -> Phi-4 replica deployment).

Imports engine and protocol only; never jobs.
"""
