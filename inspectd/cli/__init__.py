"""``inspectd`` command line: ``main`` in ``main.py``, one module per group of commands, ``common`` for what
every entry point (inspectd, inspectd-export, inspectd-train) shares. Importing the package imports nothing."""
