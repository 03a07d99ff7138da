"""The engine: find datasets, walk their files, scan them with the registered checks over any
executor, keep the blake3 manifest, verify it, and see the result case by case."""
