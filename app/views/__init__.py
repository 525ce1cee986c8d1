"""Views of the explorer: one module per view, each with ``render(ctx)``."""
