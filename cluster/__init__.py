"""Drives the workloads where they run (embedded Ray, a Ray address, KubeRay) and holds the phifleet CLI.

The only package that imports both jobs and serve.
"""
