"""The application layer: the ``pyprune`` command, recipes, the demo and the bench command.

Each parses and validates its input once, then calls the library; the library never imports
this package.
"""
