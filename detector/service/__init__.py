"""HTTP scoring service: FastAPI app, micro-batcher, auth, metrics and the uvicorn runner.

Importing this package loads no model and needs no web framework; :mod:`detector.service.app`
and :mod:`detector.service.server` import FastAPI/uvicorn (the ``serve`` extra).
"""
