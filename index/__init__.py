"""Reference index: FAISS vectors + SQLite metadata in one directory. Knows nothing of torch."""
