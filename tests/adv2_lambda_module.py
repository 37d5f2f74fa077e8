"""A module the adv2 finding 5 test copies and edits (a lambda whose file changes)."""
f = lambda x: x * 2.0  # noqa: E731
