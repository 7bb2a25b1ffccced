"""Sample data for the quickstart and the benchmark: real logos on real photos, seeded.

Submodules: ``logos`` (render simple-icons brands), ``logo_collections`` (the collections a set
can use: simple-icons, crypto, flags), ``photos`` (skimage background photos), ``studio`` (drawn
product shots), ``transforms`` (listing-like edits), ``dataset`` (write a dataset with labels
to disk; helped by ``labels``, ``build_context``, ``references``, ``listings``,
``generation``), ``runner`` (the benchmark job; helped by ``config``, ``variants``,
``quality``, ``throughput``, ``results``, ``tables``), ``transfer`` (thresholds tuned on one
set, reported on others) and ``speed`` (embedding speed; helped by ``speed_sides``,
``speed_timing``). Nothing is imported eagerly: the optional ``sample`` extra is only needed
when used.
"""
