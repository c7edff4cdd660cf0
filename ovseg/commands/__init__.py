"""Command modules of the ``ovseg`` CLI, loaded lazily from ``ovseg.cli.COMMANDS``.

Each module exposes ``*_parser()`` factories returning an ``argparse.ArgumentParser`` whose
defaults carry ``func`` (``args -> exit code``).
"""
