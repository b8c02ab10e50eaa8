"""The hub's core types: events, errors, resources, selectors, codecs, watchers.

Nothing here imports the rest of the hub, and nothing here does network I/O.
"""
