"""A tiny app for ``python -m aio_async demo``: one model, a few tasks."""
