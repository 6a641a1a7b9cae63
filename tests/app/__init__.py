"""A project app whose tasks the tests schedule."""
