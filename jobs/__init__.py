"""Offline workload: Ray Data pipelines (read -> validate -> template+tokenize -> replicas -> write).

Imports engine only; never serve.
"""
