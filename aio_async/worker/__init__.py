"""The worker's parts beside the executor: its job threads and store, and its maintenance."""
