"""aio_async's benchmark: its own figures beside its peers', measured in one run."""
