"""``autotune bench``: the tuned model next to the tools users would otherwise pick."""
