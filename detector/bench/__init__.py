"""Sample data for the quickstart and the benchmark: real logos on real photos, seeded.

Submodules: ``logos`` (render simple-icons brands), ``photos`` (skimage background photos),
``transforms`` (listing-like edits), ``dataset`` (write a dataset with labels to disk).
Nothing is imported eagerly: the optional ``sample`` extra is only needed when used.
"""
