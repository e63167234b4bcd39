"""The OpenAI shapes phifleet speaks: requests, responses, stream chunks, Batch lines, errors.

Shared by jobs (OpenAI Batch files) and serve (the HTTP API) so both accept the same bodies and
answer the same objects. Pydantic models and pure functions only: no Ray, no HTTP server.
"""
