"""The brand review loop: a queue of flagged verdicts in a database, the portal where brands
confirm or reject them (``/review`` on the service), and tuning from their decisions.

Modules: :mod:`~detector.review.models` (tables), :mod:`~detector.review.db` (engine and
Alembic migrations), :mod:`~detector.review.blobs` (content-addressed images),
:mod:`~detector.review.store` (the queue), :mod:`~detector.review.recorder` (verdicts to
items), :mod:`~detector.review.users` (tokens, sessions), :mod:`~detector.review.web` and
:mod:`~detector.review.web_session` (the portal), :mod:`~detector.review.stats`,
:mod:`~detector.review.labelled` and :mod:`~detector.review.tuning` (decisions as labels),
:mod:`~detector.review.sample` (the quickstart's queue). Needs the ``review`` extra.
"""
