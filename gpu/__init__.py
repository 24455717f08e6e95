"""reversible.gpu: the exact engine on CuPy (placeholder until the port lands)."""
