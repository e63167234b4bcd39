"""Offline workload: Ray Data pipelines (read -> keys -> prepare -> replicas -> write), one handler per job kind.

Imports engine and protocol only; never serve.
"""
